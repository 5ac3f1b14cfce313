"""The quality gate: retrain every gated model and judge it against the committed baseline.

    python scripts/quality_gate.py [OVERRIDE ...] [MODEL:OVERRIDE ...]

For each model of `configs/quality_gate.yaml` the gate retrains the CI recipe once per gate
seed (`scripts/train.py -m` sweeps, the command-line overrides passed through) and judges the
*mean over those runs* of each gated figure (`macro_f_avg`, each target's `f_avg`, the seed
slice's `macro_f_avg`) with `diplostance.regression.compare`. One tiny transformer's
macro_f_avg moves by about 0.03 between seeds; the mean of K runs moves sqrt(K) times less,
so a tolerance derived from the measured movement can be small and still honest. (Averaging
the runs' probabilities instead, a seed ensemble, scores higher but moved as much as one run
between groups of seeds: measured, see the README.) A deterministic model (tfidf) has one seed.

Overrides: `key=value` reaches every model's retraining; `MODEL:key=value` (e.g.
`tiny:model.hidden_size=64`) reaches only that model's, for keys the other model kinds lack.
The seeds are the gate's: a `seed=` override is refused.

A model's baseline entry is derived (`derive_baseline`) from N >= 2K runs, `derivation_seeds`
(the gate's K seeds first). Per gated figure, with s = the std of the figure over the N runs:

    baseline  = mean over the N runs (the figure's expected value)
    seed_std  = s / sqrt(K)          (the standard error of a mean of K runs)
    tolerance = max(3 * seed_std, bootstrap standard error)

the bootstrap standard error being the runs' mean (high - low) / 3.92 of their 95% intervals:
a floor for a model that does not depend on its seed. The entry also records every run's
figures, the disjoint groups of K as a check, the gate set (the evaluated sentences hashed
with their gold labels: figures on another set are not comparable, an error) and the gate
seeds' averaged per-sentence predictions (the table says how many changed).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from diplostance.errors import EXIT_CANNOT_START
from diplostance.outputs import atomic_write_text
from diplostance.regression import (
    SEED_SIGMAS,
    Z_95,
    GateError,
    GateRow,
    bootstrap_std,
    check_entry,
    compare,
    gated_figures,
    main_model_metrics,
    markdown,
    read_json,
)
from diplostance.schema import IGNORE_INDEX, LabelSpace

ROOT = Path(__file__).resolve().parents[1]
GATE_CONFIG = ROOT / "configs" / "quality_gate.yaml"
TRAIN_SCRIPT = ROOT / "scripts" / "train.py"
OUT_MARKER = ".quality-gate"  # marks a folder the gate may empty
TOLERANCE_RULE = (
    f"gated figure = mean over the K gate runs; baseline = mean over N >= 2K derivation runs; tolerance = "
    f"max({SEED_SIGMAS:g} * std over the N runs / sqrt(K), bootstrap standard error); bootstrap standard error = "
    f"mean over the runs of (95% interval high - low) / {Z_95}"
)


@dataclass(frozen=True)
class GatedModel:
    name: str  # the baseline entry
    overrides: tuple[str, ...]  # what makes scripts/train.py train this model, e.g. model=tiny
    seeds: tuple[int, ...]  # the gate's runs
    derivation_seeds: tuple[int, ...]  # the baseline's runs: the gate seeds first
    processes: int = 1  # training processes side by side


@dataclass(frozen=True)
class GateConfig:
    baseline: Path
    out_dir: Path
    train_overrides: tuple[str, ...]
    models: dict[str, GatedModel]


def load_gate_config(path: str | Path = GATE_CONFIG) -> GateConfig:
    cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    models = {}
    for name, spec in cfg["models"].items():
        model = GatedModel(
            name,
            tuple(spec["overrides"]),
            tuple(int(s) for s in spec["seeds"]),
            tuple(int(s) for s in spec["derivation_seeds"]),
            int(spec.get("processes", 1)),
        )
        k = len(model.seeds)
        if model.derivation_seeds[:k] != model.seeds or len(model.derivation_seeds) < max(2 * k, 3):
            raise GateError(
                f"{path}: models.{name}.derivation_seeds must start with its seeds and hold at least "
                f"{max(2 * k, 3)} seeds",
                exit_code=EXIT_CANNOT_START,
            )
        models[name] = model
    return GateConfig(
        Path(cfg["baseline"]),
        Path(cfg["out_dir"]),
        tuple(cfg["train_overrides"]),
        models,
    )


def route_overrides(overrides: Sequence[str], models: Sequence[str]) -> dict[str, list[str]]:
    """Each model's share of the command-line overrides: all plain ones, and its own `MODEL:` ones."""
    routed: dict[str, list[str]] = {name: [] for name in models}
    for override in overrides:
        head, colon, rest = override.partition(":")
        if colon and "=" not in head:
            if head not in routed:
                raise GateError(
                    f"override {override!r}: {head!r} is not a gated model (gated: {', '.join(routed)})",
                    exit_code=EXIT_CANNOT_START,
                )
            targets, override = [head], rest
        else:
            targets = list(routed)
        if override.split("=", 1)[0].lstrip("+~") == "seed":
            raise GateError(
                f"override {override!r}: the gate chooses the seeds (configs/quality_gate.yaml), they are not "
                "an override",
                exit_code=EXIT_CANNOT_START,
            )
        for name in targets:
            routed[name].append(override)
    return routed


# ---------------------------------------------------------------- retraining


def prepare_out_dir(out_dir: Path, inputs: Sequence[Path] = ()) -> None:
    """An empty gate folder: a previous gate's folder is emptied, any other non-empty folder refused,
    and so is a folder that is, holds or lies inside an input (the baseline)."""
    for source in inputs:
        folder, source = out_dir.resolve(), Path(source).resolve()
        if folder == source or folder in source.parents or source in folder.parents:
            raise GateError(
                f"{out_dir}: the gate folder would hold or replace the input {source}: choose another --out",
                exit_code=EXIT_CANNOT_START,
            )
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / OUT_MARKER).is_file():
            raise GateError(
                f"{out_dir}: not empty and not a quality gate folder: choose another --out", exit_code=EXIT_CANNOT_START
            )
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / OUT_MARKER).write_text("written by scripts/quality_gate.py; emptied by the next gate\n")


def retrain(
    model: GatedModel, seeds: Sequence[int], overrides: Sequence[str], train_overrides: Sequence[str], out_dir: Path
) -> list[Path]:
    """`model.processes` `train.py -m` sweeps side by side over the seeds; the run folders, in seed order.

    Each sweep's output goes to out_dir/NAME-<i>.log. Side by side because the CI recipe trains on one
    torch thread: on 2 shared cores, two one-thread processes finish far sooner than one two-thread one.
    """
    sweep_dir = out_dir / model.name
    chunks = [list(seeds[i :: model.processes]) for i in range(min(model.processes, len(seeds)))]
    started = []
    for i, chunk in enumerate(chunks, 1):
        command = [
            sys.executable,
            str(TRAIN_SCRIPT),
            "-m",
            *model.overrides,
            *train_overrides,
            *overrides,
            "seed=" + ",".join(str(s) for s in chunk),
            f"hydra.sweep.dir={sweep_dir}",
            "hydra.sweep.subdir=seed-${seed}",
        ]
        log_path = out_dir / f"{model.name}-{i}.log"
        with log_path.open("w", encoding="utf-8") as log:
            log.write(" ".join(command) + "\n")
            log.flush()
            started.append((log_path, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
    failures = [(log_path, process.wait()) for log_path, process in started]
    failures = [(log_path, status) for log_path, status in failures if status]
    runs = [sweep_dir / f"seed-{s}" for s in seeds]
    missing = [run.name for run in runs if not (run / "metrics.json").is_file()]
    if failures or missing:
        log_path, status = failures[0] if failures else (started[0][0], 0)
        tail = "\n".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:])
        print(tail, file=sys.stderr)
        raise GateError(f"retraining {model.name} failed (exit {status}; no metrics for {missing}): see {log_path}")
    return runs


# ---------------------------------------------------------------- runs that differ only in their seed


@dataclass
class SeedRuns:
    """The test predictions of runs that differ only in their seed, aligned sentence by sentence."""

    ids: list[str]
    slices: list[str]
    labels: LabelSpace
    refs: np.ndarray  # (sentences, targets) polarity index, IGNORE_INDEX where unannotated
    probs: np.ndarray  # (runs, sentences, targets, polarities)
    members: list[dict]  # each run's metrics.json

    @property
    def gate_set(self) -> dict:
        """The evaluated sentences with their gold labels, hashed: figures on another set are not comparable."""
        digest = hashlib.sha256()
        for sentence_id, row in zip(self.ids, self.refs.tolist(), strict=True):
            digest.update(f"{sentence_id}\t{row}\n".encode())
        return {"sentences": len(self.ids), "sha256": digest.hexdigest()}


def read_predictions(path: Path) -> tuple[list[str], list[str], LabelSpace, np.ndarray, np.ndarray]:
    try:
        records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        targets = tuple(records[0]["stances"])
        polarities = tuple(records[0]["stances"][targets[0]]["probs"])
        labels = LabelSpace(targets, polarities)
        refs = np.array(
            [
                [
                    IGNORE_INDEX if r["stances"][t]["gold"] is None else polarities.index(r["stances"][t]["gold"])
                    for t in targets
                ]
                for r in records
            ],
            dtype=int,
        )
        probs = np.array([[[r["stances"][t]["probs"][p] for p in polarities] for t in targets] for r in records])
        ids = [r["id"] for r in records]
        slices = [r.get("slice", r["source"]) for r in records]
    except (OSError, ValueError, KeyError, IndexError, TypeError) as error:
        raise GateError(f"{path}: not a readable predictions file ({error})") from error
    return ids, slices, labels, refs, probs


def read_runs(run_dirs: Sequence[Path]) -> SeedRuns:
    first = None
    probs, members = [], []
    for run in run_dirs:
        ids, slices, labels, refs, run_probs = read_predictions(run / "predictions.jsonl")
        if first is None:
            first = (ids, slices, labels, refs)
        elif ids != first[0] or labels != first[2] or not np.array_equal(refs, first[3]):
            raise GateError(f"{run}: its test sentences differ from {run_dirs[0]}'s; runs of one gate must share them")
        probs.append(run_probs)
        # the retrained model's figures, whatever the run's headline model (predictions.jsonl is that model's too)
        members.append(main_model_metrics(read_json(run / "metrics.json", "metrics")))
    ids, slices, labels, refs = first
    return SeedRuns(ids, slices, labels, refs, np.stack(probs), members)


def mean_metrics(members: Sequence[dict]) -> dict:
    """A metrics.json-shaped dict holding the mean over the runs of each gated figure."""
    figures = [gated_figures(m, f"run {i}") for i, m in enumerate(members)]
    mean = {metric: statistics.fmean(f[metric] for f in figures) for metric in figures[0]}
    metrics = {
        "macro_f_avg": mean["macro_f_avg"],
        "targets": {k.removeprefix("f_avg/"): {"f_avg": v} for k, v in mean.items() if k.startswith("f_avg/")},
    }
    if "seed_slice/macro_f_avg" in mean:
        metrics["seed_slice"] = {"macro_f_avg": mean["seed_slice/macro_f_avg"]}
    return metrics


def averaged_stances(runs: SeedRuns, members: Sequence[int]) -> dict[str, str]:
    """Each sentence's polarities from the runs' averaged probabilities, one letter per target (e.g. 'fna').

    Stored with the baseline so that the gate can say how many sentences it predicts differently.
    """
    preds = runs.probs[list(members)].mean(axis=0).argmax(axis=-1)
    letters = [p[0] for p in runs.labels.polarities]
    if len(set(letters)) != len(letters):
        letters = [str(i) for i in range(len(letters))]
    return {sid: "".join(letters[k] for k in row) for sid, row in zip(runs.ids, preds.tolist(), strict=True)}


# ---------------------------------------------------------------- judging


@dataclass
class ModelVerdict:
    model: str
    rows: list[GateRow]
    members_macro_f_avg: list[float]
    changed_predictions: int | None
    sentences: int
    seeds: tuple[int, ...]
    seconds: float

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows)

    def markdown(self) -> str:
        values = self.members_macro_f_avg
        spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
        changed = (
            f"; {self.changed_predictions}/{self.sentences} sentences predicted differently from the baseline's "
            "gate seeds"
            if self.changed_predictions is not None
            else ""
        )
        note = (
            f"Mean of {len(self.seeds)} run(s), seeds {', '.join(map(str, self.seeds))}: macro_f_avg per run "
            f"{statistics.fmean(values):.4f}{spread}{changed}; retrained in {self.seconds:.0f} s."
        )
        return markdown(self.model, self.rows) + "\n\n" + note


def baseline_entry_for(baseline: dict, model: GatedModel) -> dict:
    entry = (baseline.get("models") or {}).get(model.name)
    if not isinstance(entry, dict) or "gate" not in entry:
        raise GateError(
            f"baseline: no quality-gate entry for '{model.name}': derive one on purpose with "
            "bash benchmarks/update_quality_baseline.sh",
            exit_code=EXIT_CANNOT_START,
        )
    derived_for = entry["gate"].get("seeds") or []
    if len(derived_for) != len(model.seeds):
        raise GateError(
            f"baseline: the '{model.name}' entry was derived for means of {len(derived_for)} run(s), "
            f"configs/quality_gate.yaml asks for {len(model.seeds)}: re-derive it "
            "(bash benchmarks/update_quality_baseline.sh)",
            exit_code=EXIT_CANNOT_START,
        )
    return check_entry(entry, f"models.{model.name}")  # before hours of training: figures and tolerances usable


def judge(model: GatedModel, runs: SeedRuns, baseline: dict, seeds: Sequence[int], seconds: float) -> ModelVerdict:
    entry = baseline_entry_for(baseline, model)
    gate_set = runs.gate_set
    if gate_set != entry.get("gate_set"):
        raise GateError(
            f"{model.name}: the gate set changed ({entry.get('gate_set', {}).get('sentences')} sentences in the "
            f"baseline, {gate_set['sentences']} now, or other sentences or gold labels): the figures are not "
            "comparable; re-derive the baseline on purpose (bash benchmarks/update_quality_baseline.sh)"
        )
    members = range(len(runs.members))
    gate_entry = {"figures": entry["figures"], "tolerance": entry["tolerance"]}  # not its single_run block
    _, rows = compare(mean_metrics(runs.members), {"models": {model.name: gate_entry}}, model.name)
    stored = entry.get("gate", {}).get("predictions")
    changed = None
    if stored:
        changed = sum(stored.get(sid) != now for sid, now in averaged_stances(runs, members).items())
    return ModelVerdict(
        model.name,
        rows,
        [m["macro_f_avg"] for m in runs.members],
        changed,
        len(runs.ids),
        tuple(seeds),
        seconds,
    )


def run_gate(
    config: GateConfig,
    overrides: Sequence[str],
    only: Sequence[str] | None = None,
    out_dir: Path | None = None,
    seed_offset: int = 0,
) -> list[ModelVerdict]:
    """Retrain and judge every gated model (or `only` those); a broken run or file raises GateError.

    `seed_offset` shifts every gate seed: the tolerance holds for any group of that many seeds, so
    a gate on other seeds must pass too (the no-false-alarm check).
    """
    models = [config.models[name] for name in only or config.models]
    routed = route_overrides(overrides, list(config.models))
    baseline = read_json(config.baseline, "baseline")
    for model in models:  # before hours of training: every entry must exist
        baseline_entry_for(baseline, model)
    out_dir = out_dir or config.out_dir
    prepare_out_dir(out_dir, [config.baseline])
    verdicts = []
    for model in models:
        seeds = [seed + seed_offset for seed in model.seeds]
        started = time.perf_counter()
        run_dirs = retrain(model, seeds, routed[model.name], config.train_overrides, out_dir)
        seconds = time.perf_counter() - started
        verdicts.append(judge(model, read_runs(run_dirs), baseline, seeds, seconds))
    return verdicts


# ---------------------------------------------------------------- deriving the baseline


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def derive_entry(model: GatedModel, runs: SeedRuns, overrides: Sequence[str]) -> dict:
    """A baseline entry from the derivation runs (in `model.derivation_seeds` order, the gate seeds first)."""
    k, n = len(model.seeds), len(runs.members)
    per_run = [gated_figures(m, f"run {i}") for i, m in enumerate(runs.members)]
    floors = [bootstrap_std(m) for m in runs.members]
    groups = [list(range(i, i + k)) for i in range(0, n - k + 1, k)]
    figures, tolerance, derivation = {}, {}, {}
    for metric in per_run[0]:
        values = [f[metric] for f in per_run]
        seed_std = statistics.stdev(values) / math.sqrt(k)
        floor = statistics.fmean(f.get(metric, 0.0) for f in floors)
        figures[metric] = statistics.fmean(values)
        tolerance[metric] = round(max(SEED_SIGMAS * seed_std, floor), 4)
        derivation[metric] = {
            "run_values": values,
            "run_std": statistics.stdev(values),
            "seed_std": seed_std,
            "bootstrap_std": floor,
            "disjoint_group_means": [statistics.fmean(values[i] for i in g) for g in groups],
        }
    single_tolerance = {  # for check_regression.py, which judges one run's metrics.json
        metric: round(max(SEED_SIGMAS * d["run_std"], d["bootstrap_std"]), 4) for metric, d in derivation.items()
    }
    singles = [m["macro_f_avg"] for m in runs.members]
    return {
        "figures": figures,
        "tolerance": tolerance,
        "derivation": derivation,
        "gate": {
            "seeds": list(model.seeds),
            "figure": f"mean over {k} run(s) of each figure",
            "gate_seed_figures": mean_metrics(runs.members[:k]),
            "predictions": averaged_stances(runs, range(k)),
        },
        "gate_set": runs.gate_set,
        "single_runs": {
            "seeds": list(model.derivation_seeds),
            "macro_f_avg": singles,
            "mean": statistics.fmean(singles),
            "std": statistics.stdev(singles),
        },
        "single_run": {"figures": figures, "tolerance": single_tolerance},
        "seeds": list(model.derivation_seeds),
        "overrides": list(overrides),
        "commit": _git_commit(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": runs.members[0].get("config"),
    }


def derive_baseline(
    config: GateConfig, overrides: Sequence[str], only: Sequence[str] | None = None, out_dir: Path | None = None
) -> dict:
    """Train every model's derivation seeds and write its baseline entry (other entries are kept)."""
    models = [config.models[name] for name in only or config.models]
    routed = route_overrides(overrides, list(config.models))
    out_dir = out_dir or config.out_dir
    prepare_out_dir(out_dir, [config.baseline])
    baseline = {}
    for model in models:
        runs = read_runs(retrain(model, model.derivation_seeds, routed[model.name], config.train_overrides, out_dir))
        entry = derive_entry(model, runs, [*model.overrides, *config.train_overrides])
        # read again: the other entries stay as they are now, however long this model took
        baseline = read_json(config.baseline, "baseline") if config.baseline.is_file() else {}
        baseline.setdefault("models", {})[model.name] = entry
        baseline["tolerance_rule"] = TOLERANCE_RULE
        atomic_write_text(config.baseline, json.dumps(baseline, indent=2) + "\n")  # each model as soon as done
    return baseline
