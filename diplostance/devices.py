"""Which device and arithmetic a run uses, checked before any work so that an impossible choice
(fp16 on a CPU, a GPU that is not there, bf16 on a GPU without it) ends with a one-line message."""

from __future__ import annotations

import os
import re

import torch

from diplostance.errors import UserError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
CPU_BATCH_SIZE = 16  # short, length-sorted batches: little padding where compute is scarce
GPU_BATCH_SIZE = 128  # a GPU wants wide batches; padding costs little there
TRAINING_PRECISIONS = ("fp32", "bf16", "fp16")


class DeviceError(UserError, ValueError):
    """A device or precision the machine cannot provide."""


def resolve_device(name: str | None = "auto") -> torch.device:
    """`auto` is the first GPU when torch sees one, else the CPU; `cuda`/`cuda:N` must exist."""
    name = str(name or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", name)
    if not match:
        raise DeviceError(f"device must be {DEVICE_CHOICES}, got {name!r}")
    if not torch.cuda.is_available():
        raise DeviceError(f"device={name} but torch sees no CUDA GPU on this machine; use device=cpu or device=auto")
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise DeviceError(f"device={name} but this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    return torch.device("cuda", index)


def load_aware_threads() -> int:
    """The default thread count of train.py, label.py and evaluate.py: OMP_NUM_THREADS when set (torchrun
    sets it), else min(4, cores, cores minus the 1-minute load average, at least 1). Threads beyond the free
    cores of a shared machine cost far more than they give (17x slower on a busy 2-core machine)."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    free = cores - (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0)
    return max(1, min(4, cores, round(free)))


def default_batch_size(device: torch.device) -> int:
    return GPU_BATCH_SIZE if device.type == "cuda" else CPU_BATCH_SIZE


def check_inference_precision(precision: str, device: torch.device) -> None:
    """fp32 and bf16 run anywhere, fp16 on a GPU, int8 (dynamic quantisation) on the CPU."""
    if precision == "fp16" and device.type != "cuda":
        raise DeviceError("precision=fp16 needs a GPU (device=cuda); on the CPU use fp32, bf16 or int8")
    if precision == "int8" and device.type != "cpu":
        raise DeviceError("precision=int8 (dynamic quantisation) runs on the CPU only; on a GPU use fp16 or bf16")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"precision=bf16: {torch.cuda.get_device_name(device)} has no bf16 support; use fp16")


def cpu_supports_bf16() -> bool:
    """bf16 arithmetic in hardware (AVX-512 BF16 or AMX), which the oneDNN kernels need to be fast."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def trainer_precision(precision: str, use_cpu: bool) -> dict:
    """The Trainer's mixed-precision arguments for training.precision, refused where the hardware cannot."""
    if precision not in TRAINING_PRECISIONS:
        raise DeviceError(f"training.precision must be one of {list(TRAINING_PRECISIONS)}, got {precision!r}")
    on_gpu = torch.cuda.is_available() and not use_cpu
    if precision == "fp16" and not on_gpu:
        raise DeviceError(
            "training.precision=fp16 needs a CUDA GPU (fp16 mixed precision is GPU-only); on the CPU use bf16 or fp32"
        )
    if precision == "bf16":
        if on_gpu and not torch.cuda.is_bf16_supported():
            name = torch.cuda.get_device_name()
            raise DeviceError(f"training.precision=bf16: {name} has no bf16 support (Ampere or newer); use fp16")
        if not on_gpu and not cpu_supports_bf16():
            raise DeviceError("training.precision=bf16: this CPU has no bf16 instructions (AVX-512 BF16/AMX); use fp32")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def check_training_device(training) -> None:
    """`training=gpu` (training.require_gpu) on a machine without a CUDA GPU stops before any work: its
    settings (bf16, batch 64, 4 loader workers) are a GPU's, and a CPU run of them is a surprise, not a
    fallback. `training.use_cpu=true` says the CPU is meant."""
    if training.get("require_gpu", False) and not training.get("use_cpu", False) and not torch.cuda.is_available():
        raise DeviceError(
            "training=gpu needs a CUDA GPU and torch sees none on this machine: use training=default on the CPU, "
            "or add training.use_cpu=true to run the GPU settings (bf16, batch 64, 4 loader workers) on the CPU"
        )


def trainer_feeding(training, use_cpu: bool) -> dict:
    """The Trainer's arguments that keep a GPU busy, from the training config (configs/training/gpu.yaml).

    `dataloader_workers` collate batches in worker processes (kept alive between epochs) while the
    device computes; `pin_memory` (GPU only) lets the host-to-device copies run asynchronously; `tf32`
    (GPU only: TF32 tensor cores for fp32 matrix products; on the CPU it is ignored) and `torch_compile`
    are passed on. With the defaults (0 workers, tf32 and compile off) the arguments are those of a
    plain CPU run.
    """
    on_gpu = torch.cuda.is_available() and not use_cpu
    workers = int(training.get("dataloader_workers", 0) or 0)
    if workers < 0:
        raise DeviceError(f"training.dataloader_workers must be >= 0, got {workers}")
    return {
        "dataloader_num_workers": workers,
        "dataloader_persistent_workers": workers > 0,
        "dataloader_prefetch_factor": 4 if workers > 0 else None,
        "dataloader_pin_memory": on_gpu and bool(training.get("pin_memory", True)),
        "tf32": True if on_gpu and training.get("tf32", False) else None,
        "torch_compile": bool(training.get("torch_compile", False)),
    }
