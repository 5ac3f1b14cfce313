"""`python -m diplostance labelstudio config|export|import`: the round trip with Label Studio."""

from __future__ import annotations

import argparse
from pathlib import Path

from diplostance.errors import UserError, reported_as_user_errors
from diplostance.output_guard import check_output_files

DEFAULT_ANNOTATIONS = "annotations"
OVERWRITE_HELP = "replace an existing output file (never an input)"


def _labels(directory: str):
    from diplostance.annotations import load_schema

    return load_schema(Path(directory))


def config(args: argparse.Namespace) -> int:
    from diplostance.labelstudio.config import labelling_config
    from diplostance.outputs import atomic_write_text

    with reported_as_user_errors():
        if args.out:
            schema = Path(args.annotations) / "schema.yaml"
            check_output_files({"--out": args.out}, [schema], args.overwrite)
        xml = labelling_config(_labels(args.annotations))
        if args.out:
            atomic_write_text(args.out, xml)
            print(f"wrote {args.out}")
        else:
            print(xml, end="")
    return 0


def export(args: argparse.Namespace) -> int:
    from diplostance.labelstudio.export import export_tasks

    with reported_as_user_errors():
        check_counts(args)
        check_output_files({"--out": args.out}, [args.input], args.overwrite)
        labels = _labels(args.annotations)
        exclude = args.annotations if Path(args.annotations).is_dir() else None
        counts = export_tasks(
            args.input,
            args.out,
            labels,
            n=args.n,
            strategy=args.select,
            measure=args.uncertainty,
            per_article=args.per_article,
            seed=args.seed,
            annotations=exclude,
            model_version=args.model_version,
            context=args.context,
        )
    print(
        f"{counts['sentences']} sentences, {counts['already_annotated']} already annotated; "
        f"wrote {counts['tasks']} tasks ({args.select}) from {counts['articles']} articles "
        f"(at most {counts['most_per_article']} per article) to {args.out}"
    )
    return 0


def import_(args: argparse.Namespace) -> int:
    from diplostance.labelstudio.importer import import_export

    with reported_as_user_errors():
        labels = _labels(args.annotations)
        result, review, added = import_export(
            args.export, args.out, labels, args.review, args.register, args.annotations, args.split, args.overwrite
        )
    for problem in result.problems:
        print(problem)
    print("\n| target | tasks with 2+ annotations | observed agreement | Krippendorff's alpha |\n|---|---|---|---|")
    for target, row in result.agreement.items():
        print(f"| {target} | {row['tasks']} | {row['observed']} | {row['alpha']} |")
    print(f"\nwrote {len(result.records)} records to {args.out}; {len(result.review)} tasks to review in {review}")
    if args.split:
        print(f"added {len(added)} new document(s) to '{args.split}' in {Path(args.annotations) / 'splits.yaml'}")
    return 0


def check_counts(args: argparse.Namespace) -> None:
    """--n, --per-article and --context are counts: a negative (or, for --n and --per-article, zero) one is
    a mistake, refused before anything is read."""
    if args.n < 1:
        raise UserError(f"--n must be a positive number of sentences, got {args.n}")
    if args.per_article is not None and args.per_article < 1:
        raise UserError(f"--per-article must be a positive number of sentences, got {args.per_article}")
    if args.context < 0:
        raise UserError(f"--context must be 0 or more sentences, got {args.context}")


def add_parser(commands) -> None:
    """The `labelstudio` command group, added to the top-level parser's subcommands."""
    group = commands.add_parser("labelstudio", help="Label Studio round trip: labelling config, tasks, import")
    sub = group.add_subparsers(dest="labelstudio_command", required=True)
    schema_help = "annotation folder whose schema.yaml (and annotation files) to use (default: annotations)"

    c = sub.add_parser("config", help="the Label Studio labelling config (XML) generated from schema.yaml")
    c.add_argument("--out", default=None, help="write it here (default: print it)")
    c.add_argument("--annotations", default=DEFAULT_ANNOTATIONS, help=schema_help)
    c.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    c.set_defaults(run=config)

    e = sub.add_parser("export", help="Label Studio tasks with pre-annotations for a selection of sentences")
    e.add_argument("input", help="label.py's OUT.jsonl, or evaluate.py's predictions.jsonl")
    e.add_argument("--out", required=True, help="tasks file (JSON) to import into Label Studio")
    e.add_argument("--n", type=int, required=True, help="how many sentences to send")
    e.add_argument("--select", default="uncertainty", choices=["uncertainty", "diverse", "random"])
    e.add_argument("--uncertainty", default="margin", choices=["margin", "entropy"], help="uncertainty measure")
    e.add_argument("--per-article", type=int, default=None, help="at most this many sentences from one article")
    e.add_argument("--seed", type=int, default=0, help="seed for --select random")
    e.add_argument("--context", type=int, default=1, help="sentences shown before and after (default 1)")
    e.add_argument("--model-version", default=None, help="pre-annotations' model_version (default: input name)")
    e.add_argument("--annotations", default=DEFAULT_ANNOTATIONS, help=schema_help + "; its texts are never sent again")
    e.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    e.set_defaults(run=export)

    i = sub.add_parser("import", help="a Label Studio JSON export into annotation records (source: annotated)")
    i.add_argument("export", help="the project's JSON export")
    i.add_argument("--out", required=True, help="annotation records (JSON Lines), e.g. annotations/annotated/r1.jsonl")
    i.add_argument("--review", default=None, help="tasks not imported, with reasons (default: OUT.review.jsonl)")
    i.add_argument("--split", default=None, choices=["train", "dev", "test"], help="add new documents to this split")
    i.add_argument("--register", default=None, help="the outlets' register (one of schema.yaml's registers)")
    i.add_argument("--annotations", default=DEFAULT_ANNOTATIONS, help=schema_help + "; --split edits its splits.yaml")
    i.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP + " (--out and --review)")
    i.set_defaults(run=import_)
