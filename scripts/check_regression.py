"""Fail (exit 1) when model quality falls below the committed baseline by more than its tolerance.

python scripts/check_regression.py metrics=RUN/metrics.json [baseline=benchmarks/quality_baseline.json]

It judges the run's main model (`RUN/model`, named by config.model.name, under `model` in metrics.json),
the model a baseline entry is for, not the headline ensemble whose figures lead metrics.json.

Exit status: 0 pass, 1 a gated figure fell by more than its tolerance or the metrics cannot be
judged (undefined, not finite, out of range, targets that differ from the baseline), 2 the gate
cannot start: a file is missing, or the baseline has no usable entry for the model (no entry, a
figure or tolerance missing or not finite), the same rule as scripts/quality_gate.py.
"""

import sys
from pathlib import Path

import hydra
from hydra.utils import to_absolute_path
from omegaconf import DictConfig

from diplostance.errors import reported_as_user_errors, take_verbose_flag
from diplostance.output_guard import check_output_files
from diplostance.regression import compare, markdown, read_json, update_baseline


@hydra.main(version_base="1.3", config_path="../configs", config_name="check_regression")
def main(cfg: DictConfig) -> None:
    with reported_as_user_errors():
        baseline_path = Path(to_absolute_path(cfg.baseline))
        inputs = [to_absolute_path(cfg.metrics), *(to_absolute_path(p) for p in cfg.seed_runs or ())]
        if cfg["update"]:  # item access: cfg.update is DictConfig's dict-style update() method
            check_output_files({"baseline": baseline_path}, inputs, overwrite=True, overwrite_flag="")
        if cfg.summary_file:  # appended to (GitHub's step summary), never an input
            check_output_files({"summary_file": cfg.summary_file}, [*inputs, baseline_path], overwrite=True)
        metrics = read_json(to_absolute_path(cfg.metrics), "metrics")
        if cfg["update"]:
            seed_runs = [read_json(to_absolute_path(p), "seed run metrics") for p in cfg.seed_runs]
            update_baseline(baseline_path, metrics, seed_runs, cfg.entry)
            print(f"baseline written: {baseline_path}")
        model, rows = compare(metrics, read_json(baseline_path, "baseline"), cfg.entry)
        table = markdown(model, rows)
        print(table)
        if cfg.summary_file:
            with open(cfg.summary_file, "a", encoding="utf-8") as summary:
                summary.write(table + "\n\n")
    failed = [row.metric for row in rows if not row.passed]
    if failed:
        sys.exit(f"quality gate FAILED for {model}: {', '.join(failed)} fell by more than the tolerance")
    print(f"quality gate passed for {model}")


if __name__ == "__main__":
    sys.argv[1:] = take_verbose_flag(sys.argv[1:])
    main()
