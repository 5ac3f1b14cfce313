#!/usr/bin/env bash
# Re-derive benchmarks/quality_baseline.json, on purpose only (after a corpus, model or training
# change that moves the figures). For each gated model of configs/quality_gate.yaml it trains the
# CI recipe with every `derivation_seeds` seed (N >= 2K runs, the gate's K seeds first), then writes the
# baseline entry: each gated figure's mean over the N runs, and its tolerance max(3 * run std / sqrt(K),
# bootstrap standard error) (see diplostance/gate.py). Extra arguments are passed on, e.g. --models tiny.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
"$PY" scripts/quality_gate.py --update-baseline --out outputs/baseline-update "$@"
