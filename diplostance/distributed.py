"""Multi-process training launched by torchrun or `accelerate launch` (one process per GPU or CPU slot).

The HF Trainer runs DDP from the launcher's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...).
What is ours: every rank must write into one run folder, although Hydra names it from the
clock and the process (`${now:}`, `${run_id:}`) and ranks start at different moments, on
different machines; and only rank 0 writes outputs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

RUN_DIR_OVERRIDE = "hydra.run.dir="


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def _rank0_run_dir(config_dir: Path, config_name: str, overrides: Sequence[str]) -> str:
    """hydra.run.dir as Hydra would resolve it in this process for these overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.utils import setup_globals
    from omegaconf import OmegaConf

    setup_globals()  # the ${now:} resolver
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
        run_dir = str(OmegaConf.select(cfg, "hydra.run.dir"))
    GlobalHydra.instance().clear()
    return run_dir


def shared_run_dir(argv: Sequence[str], config_dir: Path, config_name: str) -> list[str]:
    """argv for this rank: under a multi-process launch, rank 0's run folder for every rank.

    Rank 0 resolves hydra.run.dir and sends it to the others over the default process group, which
    the Trainer (accelerate) then uses as it is: gloo for CPU tensors, and NCCL for CUDA tensors where
    there is a GPU. (A group destroyed and made again on the same store would meet the old one's
    addresses.) Other ranks leave `.hydra/` to rank 0.
    """
    argv = list(argv)
    if world_size() < 2:
        return argv
    if any(a in ("-m", "--multirun") or a.startswith("--multirun") for a in argv):
        from diplostance.errors import UserError

        raise UserError("a multi-process launch (torchrun, accelerate launch) runs one training, not a -m sweep")
    if not any(a.startswith(RUN_DIR_OVERRIDE) for a in argv):
        import torch.distributed as dist

        overrides = [a for a in argv if not a.startswith("-")]
        import torch

        shared = [_rank0_run_dir(config_dir, config_name, overrides) if is_main_process() else None]
        if not dist.is_initialized():
            if torch.cuda.is_available():
                torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
            dist.init_process_group("cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo")
        dist.broadcast_object_list(shared, src=0)
        argv.append(f"{RUN_DIR_OVERRIDE}'{shared[0]}'")
    if not is_main_process():
        argv.append("hydra.output_subdir=null")
    return argv
