"""Train a stance classifier: python scripts/train.py [model=tiny|arabert|...|tfidf] [key=value ...]"""

import sys
from pathlib import Path

# This folder holds evaluate.py, which would shadow the `evaluate` package: keep it off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import logging

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from diplostance.errors import UserError
from diplostance.reports import per_label_table
from diplostance.training import train


@hydra.main(version_base="1.3", config_path="../configs", config_name="train")
def main(cfg: DictConfig) -> float:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        metrics = train(cfg, run_dir)
    except UserError as error:
        sys.exit(f"error: {error}")
    print(per_label_table(metrics))
    logging.getLogger(__name__).info("outputs in %s", run_dir)
    return metrics["macro_f_avg"]


if __name__ == "__main__":
    main()
