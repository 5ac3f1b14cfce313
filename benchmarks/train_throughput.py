"""Training throughput of the real Trainer path: optimizer steps/s and samples/s.

    python benchmarks/train_throughput.py                          # tiny and 12x384 on this machine's default device
    python benchmarks/train_throughput.py --shapes tiny --steps 40 --training default gpu
    python benchmarks/train_throughput.py --shapes base --training gpu --precision bf16 fp16

Each measurement builds the trainer exactly as `scripts/train.py` does (`diplostance.training.build_trainer`:
the corpus, the tokenizer, the masked loss with class weights, collation, the Trainer with its per-epoch
evaluation and checkpoints) for a `training=` group, and times optimizer steps after a warm-up of
`--warmup` steps until `--steps` steps: whatever the loop does in that stretch (collation, evaluation
and checkpoints at epoch ends, logging) is in the figure. samples/s = steps/s x batch size x processes.
Shapes: tiny (the model=tiny default: 2 layers, hidden 128), 12x384 (12 layers, hidden 384) and base
(12 layers, hidden 768, the BERT-base shape), all with the tiny model's locally trained vocabulary.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {
    "tiny": [],
    "12x384": ["model.hidden_size=384", "model.num_layers=12", "model.num_heads=6", "model.intermediate_size=1536"],
    "base": ["model.hidden_size=768", "model.num_layers=12", "model.num_heads=12", "model.intermediate_size=3072"],
}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return hydra_compose(config_name="train", overrides=[f"data.directory={ROOT / 'annotations'}", *overrides])


def measure(shape: str, training: str, precision: str | None, steps: int, warmup: int, extra=()) -> dict:
    """Steps/s and samples/s of build_trainer's Trainer for one shape and training group."""
    from omegaconf import OmegaConf
    from transformers import TrainerCallback

    from diplostance.data import load_data
    from diplostance.text import TextNormalization
    from diplostance.training import build_trainer

    overrides = [f"training={training}", *SHAPES[shape], "training.progress_bar=false", *extra]
    overrides += [f"training.precision={precision}"] if precision else []
    cfg = compose(overrides)
    normalization = TextNormalization.from_dict(OmegaConf.to_container(cfg.text_processing))
    marks: dict[int, float] = {}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warmup, steps):
                if "cuda" in str(args.device):
                    import torch

                    torch.cuda.synchronize()
                marks[state.global_step] = time.perf_counter()
            if state.global_step >= steps:
                control.should_training_stop = True

    with tempfile.TemporaryDirectory(prefix="train-bench-") as tmp:
        trainer = build_trainer(cfg, load_data(cfg.data), normalization, Path(tmp))
        trainer.add_callback(Clock())
        trainer.train()
        args = trainer.args
        device = str(args.device)
    if steps not in marks:
        raise SystemExit(f"error: the run stopped after fewer than {steps} steps (early stopping): use fewer --steps")
    seconds = marks[steps] - marks[warmup]
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
    rate = (steps - warmup) / seconds
    return {
        "shape": shape,
        "training": training,
        "precision": cfg.training.precision,
        "device": device,
        "batch": per_step,
        "steps": steps - warmup,
        "seconds": seconds,
        "steps_per_s": rate,
        "samples_per_s": rate * per_step,
    }


def table(rows: list[dict]) -> str:
    lines = ["| shape | training | precision | device | batch | steps timed | steps/s | samples/s |"]
    lines.append("|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        lines.append(
            f"| {r['shape']} | {r['training']} | {r['precision']} | {r['device']} | {r['batch']} | {r['steps']} "
            f"| {r['steps_per_s']:.2f} | {r['samples_per_s']:.1f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", nargs="+", default=["tiny", "12x384"], choices=sorted(SHAPES))
    parser.add_argument("--training", nargs="+", default=["default"], help="training= groups (default, gpu, ci)")
    parser.add_argument("--precision", nargs="+", default=[None], help="fp32 bf16 fp16 (default: the group's)")
    parser.add_argument("--steps", type=int, default=30, help="optimizer steps in all, warm-up included")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch threads (training.num_threads)")
    args = parser.parse_args(argv)
    if not 0 < args.warmup < args.steps:
        parser.error("--warmup must be positive and below --steps")
    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    extra = [f"training.num_threads={args.threads}"] if args.threads else []
    rows = []
    for shape in args.shapes:
        for training in args.training:
            for precision in args.precision:
                rows.append(measure(shape, training, precision, args.steps, args.warmup, extra))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
