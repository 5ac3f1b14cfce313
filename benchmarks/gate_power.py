"""Power of the quality gate: inject realistic regressions into a copy of the project, retrain, judge.

python benchmarks/gate_power.py [--models tiny,tfidf] [--only NAME,...] [--jobs 1] [--work DIR]

For each regression and each gated model it affects: copy the project (sources, configs,
annotations, baseline; this tree is only read) into a work folder, inject the regression there
(corrupted annotations, a patched module or overrides), run that copy's
`scripts/quality_gate.py --models MODEL`, and read its runs back. One Markdown table per model:

- real: mean macro_f_avg of the gate's runs on the original test set (a dropped corpus file
  changes the test set: its runs are evaluated again on the original one), and its drop from the
  baseline (the mean of all derivation runs);
- verdict: pass, FAIL with the rows that fell beyond their tolerance, or error (the gate refused to judge);
- caught: a FAIL or an error. A regression whose real drop exceeds 0.05 and that passes is MISSED
  (exit status 1). A control row (nothing injected, other seeds) must pass.

Rows are appended to WORK/results.jsonl as they finish, so a long run can be read while it goes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diplostance.gate import load_gate_config, read_runs  # noqa: E402

MUST_CATCH = 0.05  # a real macro_f_avg drop larger than this must not pass
COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "outputs", "multirun", "__pycache__", "*.egg-info", ".*_cache", ".hypothesis", "node_modules"
)


# ---------------------------------------------------------------- injections (each edits the copy only)


def flip_labels(share: float) -> Callable[[Path], list[str]]:
    """`share` of the training split's favor/against labels swapped (seeded): annotation noise."""

    def inject(root: Path) -> list[str]:
        splits = yaml.safe_load((root / "annotations" / "splits.yaml").read_text(encoding="utf-8"))
        train_docs = set(splits["train"])
        rng = random.Random(0)
        swap = {"favor": "against", "against": "favor"}
        annotations = root / "annotations"  # the files the loader reads (diplostance.annotations)
        for path in [
            *annotations.glob("*.jsonl"),
            *annotations.glob("corpus/**/*.jsonl"),
            *annotations.glob("annotated/**/*.jsonl"),
        ]:
            lines = []
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line) if line.strip() else None
                if record and record["doc_id"] in train_docs:
                    for target, stance in record["stances"].items():
                        if stance in swap and rng.random() < share:
                            record["stances"][target] = swap[stance]
                lines.append(json.dumps(record, ensure_ascii=False) if record else line)
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return []

    return inject


def drop_corpus_file(name: str) -> Callable[[Path], list[str]]:
    """One annotation file gone, with its documents taken out of splits.yaml (so the corpus still loads)."""

    def inject(root: Path) -> list[str]:
        path = root / "annotations" / "corpus" / name
        docs = {json.loads(line)["doc_id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
        path.unlink()
        splits_path = root / "annotations" / "splits.yaml"
        splits = yaml.safe_load(splits_path.read_text(encoding="utf-8"))
        splits = {split: [d for d in ids if d not in docs] for split, ids in splits.items()}
        splits_path.write_text(yaml.safe_dump(splits, sort_keys=False), encoding="utf-8")
        return []

    return inject


def tiny_config(root: Path) -> dict:
    return yaml.safe_load((root / "configs" / "model" / "tiny.yaml").read_text(encoding="utf-8"))


def half_width(root: Path) -> list[str]:
    tiny = tiny_config(root)
    return [
        f"tiny:model.hidden_size={tiny['hidden_size'] // 2}",
        f"tiny:model.intermediate_size={tiny['intermediate_size'] // 2}",
    ]


def learning_rate_over_100(root: Path) -> list[str]:
    return [f"tiny:training.learning_rate={tiny_config(root)['learning_rate'] / 100:g}"]


def inference_normalises_differently(root: Path) -> list[str]:
    """A bug in the copy's predictor: inference folds alef, yaa and taa marbuta, training did not."""
    path = root / "diplostance" / "predictors" / "transformer.py"
    source = path.read_text(encoding="utf-8")
    loaded = "TextNormalization.load(model_dir)"
    if loaded not in source:
        raise RuntimeError(f"{path}: no `{loaded}` to patch; update inference_normalises_differently")
    patched = f"__import__('dataclasses').replace({loaded}, fold_alef=True, fold_yaa=True, fold_taa_marbuta=True)"
    path.write_text(source.replace(loaded, patched), encoding="utf-8")
    return []


def overrides(*values: str) -> Callable[[Path], list[str]]:
    return lambda root: list(values)


@dataclass(frozen=True)
class Regression:
    name: str
    models: tuple[str, ...]  # the gated models it can affect (others would retrain the same model)
    inject: Callable[[Path], list[str]]  # edits the copy, returns the gate's overrides
    seed_offset: int = 0


# Cheapest first (fewer or shorter epochs), then the headline cases: partial results come early.
REGRESSIONS = [
    Regression("max_length=8", ("tiny",), overrides("training.max_length=8")),
    Regression("too few epochs (2)", ("tiny",), overrides("training.epochs=2")),
    Regression("learning rate / 100", ("tiny",), learning_rate_over_100),
    Regression("label noise 30% (train favor<->against)", ("tiny", "tfidf"), flip_labels(0.30)),
    Regression("encoder width halved", ("tiny",), half_width),
    Regression("control: nothing injected, other seeds", ("tiny",), overrides(), seed_offset=1000),
    Regression("inference normalises text differently", ("tiny", "tfidf"), inference_normalises_differently),
    Regression("label noise 20%", ("tiny", "tfidf"), flip_labels(0.20)),
    Regression(
        "class weights off",
        ("tiny", "tfidf"),
        overrides("training.class_weights=false", "tfidf:model.tfidf.class_weight=false"),
    ),
    Regression("corpus file news_05.jsonl dropped", ("tiny", "tfidf"), drop_corpus_file("news_05.jsonl")),
    Regression("label noise 10%", ("tiny", "tfidf"), flip_labels(0.10)),
]


# ---------------------------------------------------------------- running one case


@dataclass
class Outcome:
    regression: str
    model: str
    verdict: str
    real: float | None = None
    real_drop: float | None = None
    seconds: float = 0.0
    note: str = ""
    members: list[float] = field(default_factory=list)

    @property
    def caught(self) -> bool:
        return self.verdict != "pass"


def python_env(copy: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_STEP_SUMMARY"}
    env["PYTHONPATH"] = str(copy)  # the copy's diplostance, not this tree's editable install
    return env


def evaluate_on(copy: Path, run_dir: Path, annotations: Path) -> float:
    out = run_dir / "original-test"
    subprocess.run(
        [sys.executable, str(copy / "scripts" / "evaluate.py"), f"model_dir={run_dir / 'model'}",
         f"data.directory={annotations}", f"data.seeds={copy / 'seeds'}", "bootstrap_resamples=0",
         f"hydra.run.dir={out}"],
        cwd=copy, env=python_env(copy), check=True, capture_output=True, text=True,
    )  # fmt: skip
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))["macro_f_avg"]


def run_case(regression: Regression, model: str, work: Path, baseline: dict) -> Outcome:
    slug = "".join(c if c.isalnum() else "-" for c in regression.name.lower())[:40].strip("-")
    copy = work / f"{slug}-{model}"
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(ROOT, copy, ignore=COPY_IGNORE)
    original = copy / "original-annotations"
    shutil.copytree(copy / "annotations", original)
    gate_overrides = regression.inject(copy)
    out = copy / "outputs" / "gate"
    command = [sys.executable, str(copy / "scripts" / "quality_gate.py"), "--models", model, f"--out={out}",
               f"--seed-offset={regression.seed_offset}", *gate_overrides]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(command, cwd=copy, env=python_env(copy), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    (copy / "gate.stdout").write_text(result.stdout)
    (copy / "gate.stderr").write_text(result.stderr)
    failed = [line for line in result.stderr.splitlines() if line.startswith("quality gate FAILED")]
    if result.returncode == 0:
        verdict = "pass"
    elif failed:
        verdict = "FAIL: " + failed[-1].split(f"({model}: ", 1)[-1].split(" fell")[0]
    else:
        last = [line for line in result.stderr.splitlines() if line.startswith("error:")] or ["?"]
        verdict = f"error ({last[-1].removeprefix('error: ')[:90]})"
    outcome = Outcome(regression.name, model, verdict, seconds=round(seconds))
    entry = baseline["models"][model]
    run_dirs = sorted((out / model).glob("seed-*"))
    if not run_dirs or not all((r / "metrics.json").is_file() for r in run_dirs):
        outcome.note = "no finished runs"
        return outcome
    runs = read_runs(run_dirs)
    if runs.gate_set == entry["gate_set"]:
        outcome.members = [m["macro_f_avg"] for m in runs.members]
    else:
        outcome.members = [evaluate_on(copy, r, original) for r in run_dirs]
        outcome.note = f"test set changed ({len(runs.ids)} sentences): real quality evaluated on the original"
    outcome.real = statistics.fmean(outcome.members)
    outcome.real_drop = entry["single_runs"]["mean"] - outcome.real
    return outcome


# ---------------------------------------------------------------- report


def fmt(value: float | None, sign: bool = False) -> str:
    return "n/a" if value is None else f"{value:+.3f}" if sign else f"{value:.3f}"


def table(model: str, outcomes: list[Outcome], entry: dict) -> str:
    lines = [
        f"### {model}: baseline macro_f_avg {entry['figures']['macro_f_avg']:.3f} (mean of "
        f"{len(entry['single_runs']['seeds'])} runs), gate tolerance {entry['tolerance']['macro_f_avg']:.3f}",
        "",
        "| regression | real macro_f_avg (runs' mean ± std) | real drop | gate verdict (failed rows) | caught | time |",
        "|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        must = o.real_drop is not None and o.real_drop > MUST_CATCH
        caught = "yes" if o.caught else ("**MISSED**" if must else "no")
        if o.regression.startswith("control"):
            caught = "false alarm" if o.caught else "(passes: right)"
        real = fmt(o.real) + (f" ± {statistics.stdev(o.members):.3f}" if len(o.members) > 1 else "")
        lines.append(
            f"| {o.regression} | {real} | {fmt(o.real_drop, True)} | {o.verdict} | {caught} | {o.seconds} s |"
            + (f" {o.note}" if o.note else "")
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="tiny,tfidf")
    parser.add_argument("--only", help="comma-separated substrings of regression names")
    parser.add_argument("--jobs", type=int, default=1, help="cases run side by side")
    parser.add_argument("--work", type=Path, default=Path("/tmp/diplostance-gate-power"))
    args = parser.parse_args()
    config = load_gate_config(ROOT / "configs" / "quality_gate.yaml")
    baseline = json.loads((ROOT / config.baseline).read_text(encoding="utf-8"))
    models = args.models.split(",")
    wanted = args.only.split(",") if args.only else None
    cases = [
        (r, m)
        for r in REGRESSIONS
        for m in models
        if m in r.models and (wanted is None or any(w.lower() in r.name.lower() for w in wanted))
    ]
    args.work.mkdir(parents=True, exist_ok=True)
    results_path = args.work / "results.jsonl"
    print(f"{len(cases)} cases, {args.jobs} at a time; rows in {results_path}", flush=True)

    def run(case):
        outcome = run_case(*case, args.work, baseline)
        with results_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(vars(outcome)) + "\n")
        print(f"{outcome.model}: {outcome.regression}: {outcome.verdict}, real drop {fmt(outcome.real_drop, True)}, "
              f"{outcome.seconds} s", flush=True)  # fmt: skip
        return outcome

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        outcomes = list(pool.map(run, cases))
    missed = []
    for model in models:
        rows = [o for o in outcomes if o.model == model]
        print("\n" + table(model, rows, baseline["models"][model]))
        missed += [
            f"{model}: {o.regression}" for o in rows if o.real_drop and o.real_drop > MUST_CATCH and not o.caught
        ]
        missed += [f"{model}: false alarm" for o in rows if o.regression.startswith("control") and o.caught]
    print("\n" + (f"MISSED or false alarm: {missed}" if missed else "every regression with a real drop > 0.05 caught"))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
