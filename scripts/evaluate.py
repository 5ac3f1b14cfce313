"""Evaluate a saved model folder: python scripts/evaluate.py model_dir=PATH [data=...] [split=test]"""

import sys
from pathlib import Path

# This folder holds evaluate.py, which would shadow the `evaluate` package: keep it off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

from diplostance.data import load_data
from diplostance.errors import UserError
from diplostance.evaluation import evaluate_model
from diplostance.reports import per_label_table


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    model_dir = Path(to_absolute_path(cfg.model_dir))
    try:
        metrics = evaluate_model(
            model_dir,
            load_data(cfg.data),
            cfg.split,
            run_dir,
            f"evaluation of {model_dir}",
            predictor_options=OmegaConf.to_container(cfg.predictor),
            n_resamples=cfg.bootstrap_resamples,
            seed=cfg.seed,
        )
    except UserError as error:
        sys.exit(f"error: {error}")
    print(per_label_table(metrics))
    print(f"outputs in {run_dir}")


if __name__ == "__main__":
    main()
