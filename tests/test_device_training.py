"""training=gpu: the settings that keep a GPU busy map onto the Trainer, and compose on a machine without one."""

from __future__ import annotations

import pytest
import torch

from diplostance.training import ConfigError, _training_arguments
from tests.conftest import train_config


@pytest.mark.skipif(torch.cuda.is_available(), reason="describes a machine without a GPU")
def test_training_gpu_maps_onto_the_trainer_and_drops_the_gpu_only_settings_on_the_cpu(tmp_path):
    cfg = train_config("training=gpu", "training.precision=fp32")
    args = _training_arguments(cfg, tmp_path, has_dev=True)
    assert (args.per_device_train_batch_size, args.dataloader_num_workers, args.dataloader_persistent_workers) == (
        64,
        4,
        True,
    )
    assert (args.full_determinism, args.save_only_model, args.eval_strategy, args.save_strategy) == (
        False,
        True,
        "epoch",
        "epoch",
    )
    assert args.dataloader_pin_memory is False and args.tf32 is None  # GPU-only: off on the CPU


def test_the_default_training_keeps_its_arguments(tmp_path):
    args = _training_arguments(train_config(), tmp_path, has_dev=True)
    assert (args.dataloader_num_workers, args.full_determinism, args.save_only_model, args.tf32) == (
        0,
        True,
        False,
        None,
    )
    assert args.eval_strategy == "epoch" and args.torch_compile is False


def test_eval_steps_evaluates_and_checkpoints_every_n_steps(tmp_path):
    args = _training_arguments(train_config("training.eval_steps=40"), tmp_path, has_dev=True)
    assert (args.eval_strategy, args.eval_steps, args.save_strategy, args.save_steps) == ("steps", 40, "steps", 40)


def test_resume_with_model_only_checkpoints_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="save_only_model=false"):
        _training_arguments(train_config("training=gpu", "training.resume=true"), tmp_path, has_dev=True)
