"""Train a stance classifier: python scripts/train.py [model=tiny|arabert|...|tfidf] [key=value ...]"""

import sys
from pathlib import Path

# This folder holds evaluate.py, which would shadow the `evaluate` package: keep it off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

import diplostance.outputs  # noqa: F401  (registers the ${run_id:} resolver of the run folder names)
from diplostance.distributed import shared_run_dir
from diplostance.errors import reported_as_user_errors, take_verbose_flag
from diplostance.reports import headline_lines, per_label_table
from diplostance.training import train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with reported_as_user_errors():
        metrics = train(cfg, run_dir)
    if metrics is None:  # a rank other than 0 of a multi-process launch: rank 0 reports
        return None
    print(per_label_table(metrics))  # the headline model's (the ensemble's when the run has one)
    logging.getLogger(__name__).info("outputs in %s", run_dir)
    print("\n".join(headline_lines(metrics, run_dir)))  # last: which model to use, where, and its score
    return metrics["macro_f_avg"]


if __name__ == "__main__":
    sys.argv[1:] = take_verbose_flag(sys.argv[1:])
    with reported_as_user_errors():  # torchrun / accelerate launch: every rank gets rank 0's run folder
        sys.argv[1:] = shared_run_dir(sys.argv[1:], Path(__file__).resolve().parents[1] / "configs", "train")
    main()
