"""Devices and arithmetic on a machine without a GPU: auto picks the CPU, impossible choices stop
before any work with one line, and the training precision maps onto the Trainer's arguments."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from diplostance.devices import DeviceError, cpu_supports_bf16, default_batch_size, resolve_device, trainer_precision
from diplostance.predictors import load_predictor
from diplostance.training import _training_arguments
from tests.conftest import ROOT, SAFETY_TIMEOUT_S, train_config

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="these tests describe a machine without a GPU")


def test_auto_picks_the_cpu_here_and_names_that_are_not_devices_are_refused():
    assert resolve_device("auto") == torch.device("cpu") and default_batch_size(torch.device("cpu")) == 16
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        resolve_device("cuda:0")
    with pytest.raises(DeviceError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")


def test_fp16_inference_on_the_cpu_is_refused_and_bf16_runs(tiny_model_dir):
    with pytest.raises(DeviceError, match="precision=fp16 needs a GPU"):
        load_predictor(tiny_model_dir, precision="fp16", device="cpu")
    predictor = load_predictor(tiny_model_dir, precision="bf16", device="cpu")
    assert predictor.model.dtype == torch.bfloat16 and predictor.predict_proba(["جملة."]).shape == (1, 3, 3)


def test_label_py_refuses_a_missing_gpu_with_one_line_and_exit_2(tiny_model_dir, tmp_path):
    args = [f"model_dir={tiny_model_dir}", f"inputs=[{ROOT / 'seeds'}]", "output=OUT.jsonl", "device=cuda"]
    command = [sys.executable, str(ROOT / "scripts" / "label.py"), *args, f"hydra.run.dir={tmp_path / 'h'}"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith("error: device=cuda")
    assert not (tmp_path / "OUT.jsonl").exists() and not (tmp_path / "OUT.partial").exists()


def test_training_precision_maps_onto_the_trainer_and_fp16_on_the_cpu_is_refused(tmp_path):
    with pytest.raises(DeviceError, match="fp16 needs a CUDA GPU"):
        trainer_precision("fp16", use_cpu=True)
    cfg = train_config("training=ci", "training.precision=bf16", "training.gradient_checkpointing=true")
    if not cpu_supports_bf16():
        pytest.skip("this CPU has no bf16 instructions")
    args = _training_arguments(cfg, tmp_path, has_dev=True)
    assert (args.bf16, args.fp16, args.activation_checkpointing, args.use_cpu) == (True, False, True, True)


def test_train_stops_before_any_work_on_an_impossible_precision(tmp_path):
    from diplostance.training import train

    with pytest.raises(DeviceError, match=r"training\.precision=fp16"):
        train(train_config("model=tiny", "training=ci", "training.precision=fp16"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
