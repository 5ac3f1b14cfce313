"""The model-quality gate: compare a run's metrics.json with a committed baseline.

Gated figures: `macro_f_avg`, each target's `f_avg`, and the seed slice's
`macro_f_avg`. Each has its own tolerance, derived when the baseline is written:

    tolerance = max(3 * seed_std, bootstrap_std)

`seed_std` is the standard deviation of the figure over trainings that differ only
in their seed (run-to-run variation); `bootstrap_std` is the standard error of the
figure from test-set resampling, estimated from the 95% bootstrap interval as
(high - low) / 3.92. The second term is a floor for models whose training does not
depend on the seed (tfidf): a drop smaller than the test set can resolve is noise.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

from diplostance.errors import EXIT_CANNOT_START, BadDataError
from diplostance.outputs import atomic_write_text

Z_95 = 3.92  # width of a 95% normal interval in standard deviations
SEED_SIGMAS = 3.0


class GateError(BadDataError, ValueError):
    """A metrics or baseline file the gate cannot judge: never a pass."""


@dataclass(frozen=True)
class GateRow:
    metric: str
    baseline: float
    now: float
    tolerance: float

    @property
    def delta(self) -> float:
        return self.now - self.baseline

    @property
    def passed(self) -> bool:
        return self.delta >= -self.tolerance - 1e-12


def read_json(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise GateError(f"{path}: {what} file not found", exit_code=EXIT_CANNOT_START)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise GateError(f"{path}: {what} file is not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise GateError(f"{path}: {what} file must hold a JSON object")
    return data


def main_model_metrics(metrics: dict) -> dict:
    """The figures of a run's main model (its `model/` folder, named by config.model.name): the model a
    baseline entry is for and the one the gate retrains.

    A training run's metrics.json holds its headline model's figures at the top level (the ensemble's,
    when the run has one) and the main model's under `model`; an evaluation's, a gate mean's or an
    older run's hold only the top level, which is then the main model's."""
    main = metrics.get("model")
    if isinstance(main, dict) and "targets" in main:
        return {**metrics, **main}
    return metrics


def gated_figures(metrics: dict, source: str = "metrics") -> dict[str, float]:
    """The gated figures of a metrics.json (its main model's); a missing, non-finite or out-of-range one is
    an error.

    Every gated figure is an F1 average, so it lies in [0, 1]: Infinity, NaN (which JSON
    parsers accept) or 1.5 mean a broken metrics file, never a pass or a plain regression.
    """
    metrics = main_model_metrics(metrics)

    def number(value, name):
        if value is None and name in present:
            raise GateError(
                f"{source}: '{name}' is undefined (null: the test data has no favor or against label to score it); "
                "the gate cannot judge an undefined figure"
            )
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise GateError(f"{source}: '{name}' is missing or not a number")
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise GateError(f"{source}: '{name}' is {value}, not a figure in [0, 1]: the metrics file is broken")
        return float(value)

    targets = metrics.get("targets")
    if not isinstance(targets, dict) or not targets:
        raise GateError(f"{source}: 'targets' is missing or empty")
    present = {"macro_f_avg"} if "macro_f_avg" in metrics else set()  # a null figure is undefined, not missing
    present |= {f"targets.{t}.f_avg" for t, s in targets.items() if isinstance(s, dict) and "f_avg" in s}
    if isinstance(metrics.get("seed_slice"), dict) and "macro_f_avg" in metrics["seed_slice"]:
        present.add("seed_slice.macro_f_avg")
    figures = {"macro_f_avg": number(metrics.get("macro_f_avg"), "macro_f_avg")}
    for target, scores in targets.items():
        figures[f"f_avg/{target}"] = number((scores or {}).get("f_avg"), f"targets.{target}.f_avg")
    if "seed_slice" in metrics:
        figures["seed_slice/macro_f_avg"] = number(metrics["seed_slice"].get("macro_f_avg"), "seed_slice.macro_f_avg")
    return figures


def bootstrap_std(metrics: dict) -> dict[str, float]:
    """Standard errors of the gated figures (the main model's) from the 95% bootstrap intervals."""
    metrics = main_model_metrics(metrics)
    out = {}
    for prefix, block in (("", metrics), ("seed_slice/", metrics.get("seed_slice") or {})):
        boot = block.get("bootstrap")
        if not boot:
            continue
        low, high = boot["macro_f_avg"]
        out[f"{prefix}macro_f_avg"] = (high - low) / Z_95
        if not prefix:
            for target, interval in boot["targets"].items():
                out[f"f_avg/{target}"] = (interval["f_avg"][1] - interval["f_avg"][0]) / Z_95
    return out


def model_name(metrics: dict) -> str:
    try:
        return metrics["config"]["model"]["name"]
    except (KeyError, TypeError) as error:
        raise GateError("metrics: config.model.name is missing: pass entry=NAME") from error


def check_entry(entry, where: str) -> dict:
    """A baseline entry the gate can judge with: `figures` and a `tolerance` for each, all finite.

    A broken entry means the gate cannot start (exit status 2): never a pass, never a reported regression.
    """

    def broken(message: str) -> GateError:
        return GateError(
            f"baseline: {where}: {message}; the gate cannot judge with it (re-derive the entry on purpose)",
            exit_code=EXIT_CANNOT_START,
        )

    if not isinstance(entry, dict):
        raise broken("is not an object")
    figures, tolerance = entry.get("figures"), entry.get("tolerance")
    if not isinstance(figures, dict) or not figures:
        raise broken("has no 'figures'")
    if not isinstance(tolerance, dict):
        raise broken("has no 'tolerance'")
    for metric, value in figures.items():
        if not _finite(value) or not 0.0 <= value <= 1.0:
            raise broken(f"figures.{metric} is {value!r}, not a figure in [0, 1]")
        if metric not in tolerance:
            raise broken(f"tolerance has no '{metric}'")
        if not _finite(tolerance[metric]) or tolerance[metric] < 0:
            raise broken(f"tolerance.{metric} is {tolerance[metric]!r}, not a finite number >= 0")
    return entry


def _finite(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def baseline_entry_named(baseline: dict, name: str) -> dict:
    """The entry check_regression judges one run's metrics with (a quality-gate entry's single-run block)."""
    entries = baseline.get("models")
    if not isinstance(entries, dict) or name not in entries:
        known = sorted(entries) if isinstance(entries, dict) else []
        raise GateError(
            f"baseline: no entry for model '{name}' (has {known}); write one with update=true",
            exit_code=EXIT_CANNOT_START,
        )
    entry = entries[name]
    # A quality-gate entry (diplostance.gate) judges means over seeds; one run is judged against its single-run block.
    if isinstance(entry, dict) and "single_run" in entry:
        return check_entry(entry["single_run"], f"models.{name}.single_run")
    return check_entry(entry, f"models.{name}")


def compare(metrics: dict, baseline: dict, model: str | None = None) -> tuple[str, list[GateRow]]:
    """Rows of the gate; every baseline figure must be present in the metrics."""
    name = model or model_name(metrics)
    entry = baseline_entry_named(baseline, name)
    now = gated_figures(metrics)
    unjudged = sorted(set(now) - set(entry["figures"]))
    if unjudged:
        raise GateError(
            f"metrics: {unjudged} are not in the baseline entry '{name}', so the gate cannot judge them "
            "(a new or renamed target?); write a baseline that has them, on purpose, with update=true"
        )
    rows = []
    for metric, reference in entry["figures"].items():
        if metric not in now:
            raise GateError(f"metrics: '{metric}' is in the baseline but not in the metrics (a target went missing?)")
        rows.append(GateRow(metric, reference, now[metric], entry["tolerance"][metric]))
    return name, rows


def markdown(model: str, rows: list[GateRow]) -> str:
    lines = [
        f"### Quality gate: {model}",
        "",
        "| metric | baseline | now | delta | tolerance | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        verdict = "pass" if row.passed else "**FAIL**"
        figures = f"{row.baseline:.4f} | {row.now:.4f} | {row.delta:+.4f} | {row.tolerance:.4f}"
        lines.append(f"| {row.metric} | {figures} | {verdict} |")
    return "\n".join(lines)


def _git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def baseline_entry(metrics: dict, seed_runs: list[dict]) -> dict:
    """A baseline entry: figures of `metrics`, tolerances from seed runs and the bootstrap."""
    if len(seed_runs) < 3:
        raise GateError(f"update=true needs at least 3 seed_runs to measure run-to-run variation, got {len(seed_runs)}")
    figures = gated_figures(metrics)
    per_seed = [gated_figures(m, f"seed run {i}") for i, m in enumerate(seed_runs)]
    boot = bootstrap_std(metrics)
    tolerance, derivation = {}, {}
    for metric in figures:
        values = [run[metric] for run in per_seed if metric in run]
        seed_std = statistics.stdev(values) if len(values) > 1 else 0.0
        floor = boot.get(metric, 0.0)
        tolerance[metric] = round(max(SEED_SIGMAS * seed_std, floor), 4)
        derivation[metric] = {"seed_values": values, "seed_std": seed_std, "bootstrap_std": floor}
    return {
        "figures": figures,
        "tolerance": tolerance,
        "derivation": derivation,
        "seeds": [m.get("config", {}).get("seed") for m in seed_runs],
        "commit": _git_commit(),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": metrics.get("config"),
    }


def update_baseline(baseline_path: Path, metrics: dict, seed_runs: list[dict], model: str | None = None) -> dict:
    baseline = read_json(baseline_path, "baseline") if baseline_path.is_file() else {}
    baseline["tolerance_rule"] = (
        f"tolerance = max({SEED_SIGMAS:g} * std over seed runs, bootstrap standard error); "
        f"bootstrap standard error = (95% interval high - low) / {Z_95}"
    )
    baseline.setdefault("models", {})[model or model_name(metrics)] = baseline_entry(metrics, seed_runs)
    atomic_write_text(baseline_path, json.dumps(baseline, indent=2) + "\n")
    return baseline
