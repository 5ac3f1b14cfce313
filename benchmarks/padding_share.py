"""Share of padding positions in one epoch of training batches: length-grouped vs random.

python benchmarks/padding_share.py [hydra overrides for the train config, e.g. model.vocab_size=4000]
Builds the real Trainer (no training) and counts attention-mask zeros over its train dataloader.
"""

import sys
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from diplostance.data import load_data
from diplostance.text import TextNormalization
from diplostance.training import build_trainer, padding_share

ROOT = Path(__file__).resolve().parents[1]


def main(overrides: list[str]) -> None:
    rows = []
    for grouped in (True, False):
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            cfg = compose(
                "train", [f"data.directory={ROOT / 'annotations'}", *overrides, f"training.group_by_length={grouped}"]
            )
        data = load_data(cfg.data)
        options = TextNormalization.from_dict(OmegaConf.to_container(cfg.text_processing))
        with tempfile.TemporaryDirectory() as run_dir:
            trainer = build_trainer(cfg, data, options, Path(run_dir))
            rows.append(
                (
                    "length-grouped" if grouped else "random",
                    cfg.training.batch_size,
                    padding_share(trainer.get_train_dataloader()),
                )
            )
    print("| batches | batch size | padding share |\n|---|---|---|")
    for name, size, share in rows:
        print(f"| {name} | {size} | {share:.1%} |")


if __name__ == "__main__":
    main(sys.argv[1:])
