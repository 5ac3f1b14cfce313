"""Evaluate a saved model folder: python scripts/evaluate.py model_dir=PATH [data=...] [split=test]"""

import sys
from pathlib import Path

# This folder holds evaluate.py, which would shadow the `evaluate` package: keep it off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import DictConfig, OmegaConf

import diplostance.outputs  # noqa: F401  (registers the ${run_id:} resolver of the run folder names)
from diplostance.data import load_data
from diplostance.devices import load_aware_threads
from diplostance.errors import reported_as_user_errors, take_verbose_flag
from diplostance.evaluation import evaluate_model
from diplostance.predictors import check_model_folder
from diplostance.reports import per_label_table


def predictor_options(cfg: DictConfig) -> dict:
    """cfg.predictor; num_threads null is train.py's load-aware count; one line names what each member runs on."""
    options = OmegaConf.to_container(cfg.predictor, resolve=True)
    return {**options, "num_threads": options.get("num_threads") or load_aware_threads(), "announce": True}


@hydra.main(version_base="1.3", config_path="../configs", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    with reported_as_user_errors():
        model_dir = Path(to_absolute_path(cfg.model_dir))
        check_model_folder(model_dir)  # before the data is read: a broken folder is reported at once
        metrics = evaluate_model(
            model_dir,
            load_data(cfg.data),
            cfg.split,
            run_dir,
            f"evaluation of {model_dir}",
            predictor_options=predictor_options(cfg),
            n_resamples=cfg.bootstrap_resamples,
            seed=cfg.seed,
        )
    print(per_label_table(metrics))
    print(f"outputs in {run_dir}")


if __name__ == "__main__":
    sys.argv[1:] = take_verbose_flag(sys.argv[1:])
    main()
