"""Label new articles: python scripts/label.py model_dir=PATH inputs=[PATH,...] output=OUT.jsonl [key=value ...]

engine=local (default) streams in this process; engine=ray runs the same steps on Ray Data (a local
runtime, or ray.address=auto|ray://HEAD:10001) and writes the folder OUT/ of committed parts.

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

import diplostance.outputs  # noqa: F401  (registers the ${run_id:} resolver of the run folder names)
from diplostance.errors import reported_as_user_errors, take_verbose_flag
from diplostance.labelling import expand_output_shorthand, label


@hydra.main(version_base="1.3", config_path="../configs", config_name="label")
def main(cfg: DictConfig) -> None:
    with reported_as_user_errors():  # one line and exit 2 (1 for bad data); --verbose shows the traceback
        summary = label(cfg)
    print("\n".join(summary.lines()))
    sys.exit(1 if summary.failed and not cfg.allow_errors else 0)


if __name__ == "__main__":
    sys.argv[1:] = expand_output_shorthand(take_verbose_flag(sys.argv[1:]))
    main()
