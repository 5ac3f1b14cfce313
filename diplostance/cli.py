"""`python -m diplostance` / `diplostance`: small commands that need no Hydra config."""

from __future__ import annotations

import argparse
import sys

from diplostance.annotations import count_table, load_corpus


def validate(args: argparse.Namespace) -> int:
    corpus = load_corpus(args.directory, args.seeds)
    for problem in corpus.problems:
        print(problem)
    print(f"\n{len(corpus.records)} records, {len(corpus.problems)} problem(s)\n")
    print(count_table(corpus))
    return 1 if corpus.problems else 0


def compare(args: argparse.Namespace) -> int:
    from diplostance.reports import sweep_table

    print(sweep_table(args.directory))
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
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
