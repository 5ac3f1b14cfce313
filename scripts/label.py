"""Label new articles: python scripts/label.py model_dir=PATH inputs=[PATH,...] output=OUT.jsonl [key=value ...]

Exit status: 0 when every input was labelled (or allow_errors=true), 1 when some input
files or lines failed (they are listed in OUT.errors.jsonl), 2 when the run could not
start (model folder, options, or an existing output).
"""

import sys
from pathlib import Path

# This folder holds evaluate.py, which would shadow the `evaluate` package: keep it off sys.path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import hydra
from omegaconf import DictConfig

from diplostance.errors import UserError
from diplostance.labelling import expand_output_shorthand, label


@hydra.main(version_base="1.3", config_path="../configs", config_name="label")
def main(cfg: DictConfig) -> None:
    try:
        summary = label(cfg)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print("\n".join(summary.lines()))
    sys.exit(1 if summary.failed and not cfg.allow_errors else 0)


if __name__ == "__main__":
    sys.argv[1:] = expand_output_shorthand(sys.argv[1:])
    main()
