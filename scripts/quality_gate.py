"""The model-quality gate: retrain every gated model, compare with the committed baseline, exit 1 on a regression.

python scripts/quality_gate.py [OVERRIDE ...] [MODEL:OVERRIDE ...]      # e.g. training.max_length=8
python scripts/quality_gate.py tiny:model.hidden_size=64                # an override for one model only
python scripts/quality_gate.py --update-baseline                         # re-derive it (on purpose only)

Plain overrides reach every model's `scripts/train.py` retraining; `MODEL:` ones only that model's.
Options: --models tiny,tfidf (a subset), --out DIR, --baseline FILE, --config FILE (default
configs/quality_gate.yaml), --seed-offset N (other seeds than the baseline's: must pass too).
Exit status: 0 pass, 1 a gated figure fell by more than its tolerance
or a retraining or file cannot be judged, 2 the gate cannot start (no usable baseline entry: none, or a
figure or tolerance missing or not finite, checked before any retraining; a bad option or --out).
scripts/check_regression.py follows the same rule.
"""

import sys
from pathlib import Path

# This folder holds evaluate.py, which would shadow the `evaluate` package: keep it off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import dataclasses
import os
import time

from diplostance.errors import reported_as_user_errors, take_verbose_flag
from diplostance.gate import GATE_CONFIG, derive_baseline, load_gate_config, run_gate
from diplostance.output_guard import check_output_files
from diplostance.regression import GateError


def arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for the retraining (MODEL:key=value: one model)")
    parser.add_argument("--models", help="comma-separated subset of the gated models")
    parser.add_argument("--out", type=Path, help="folder for the retrained runs (default: out_dir of the config)")
    parser.add_argument("--baseline", type=Path, help="baseline file (default: baseline of the config)")
    parser.add_argument("--config", type=Path, default=GATE_CONFIG)
    parser.add_argument("--seed-offset", type=int, default=0, help="shift every gate seed (a no-false-alarm check)")
    parser.add_argument("--update-baseline", action="store_true", help="re-derive the baseline entries instead")
    parser.add_argument("--summary-file", default=os.environ.get("GITHUB_STEP_SUMMARY"))
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    args = arguments(argv)
    started = time.perf_counter()
    with reported_as_user_errors():
        config = load_gate_config(args.config)
        if args.baseline:
            config = dataclasses.replace(config, baseline=args.baseline)
        if args.summary_file:  # appended to (GitHub's step summary), never an input
            check_output_files({"--summary-file": args.summary_file}, [config.baseline, args.config], overwrite=True)
        only = args.models.split(",") if args.models else None
        unknown = sorted(set(only or ()) - set(config.models))
        if unknown:
            raise GateError(f"--models: {unknown} are not gated (gated: {sorted(config.models)})", exit_code=2)
        if args.update_baseline:
            derive_baseline(config, args.overrides, only, args.out)
            print(f"baseline written: {config.baseline} ({time.perf_counter() - started:.0f} s)")
            return 0
        verdicts = run_gate(config, args.overrides, only, args.out, args.seed_offset)
    report = "\n\n".join(verdict.markdown() for verdict in verdicts)
    print(report)
    if args.summary_file:
        with open(args.summary_file, "a", encoding="utf-8") as summary:
            summary.write(report + "\n\n")
    failed = [f"{v.model}: {', '.join(r.metric for r in v.rows if not r.passed)}" for v in verdicts if not v.passed]
    elapsed = time.perf_counter() - started
    if failed:
        print(
            f"quality gate FAILED ({'; '.join(failed)} fell by more than the tolerance) in {elapsed:.0f} s",
            file=sys.stderr,
        )
        return 1
    print(f"quality gate passed for {', '.join(v.model for v in verdicts)} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(take_verbose_flag(sys.argv[1:])))
