"""Sentence splitter time against article size: the linear splitter, and the old one for comparison.

python benchmarks/split_sentences.py [--sizes 64000,252000,2000000] [--old-up-to 252000]

An article of each size is built from the seed articles, repeated. Prints the best of three
timings of diplostance.text.split_sentences, and of the pre-fix splitter (tests/splitter_reference.py)
for sizes up to --old-up-to (it is quadratic: a 2 MB article produced nothing in 400 s), and
checks that both give the same sentences.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diplostance.text import split_sentences  # noqa: E402
from tests.splitter_reference import split_sentences as old_split_sentences  # noqa: E402


def article(size: int) -> str:
    seeds = "\n\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "seeds").glob("*.txt")))
    # One paragraph per seed article: line breaks end sentences, so keep the long text flowing.
    text = (seeds.replace("\n", " ") + " ") * (size // len(seeds) + 1)
    return text[:size]


def best_of(fn, text: str, repeats: int = 3) -> tuple[float, list]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(text)
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64000,252000,2000000")
    parser.add_argument("--old-up-to", type=int, default=252000)
    args = parser.parse_args()
    print("| characters | sentences | linear splitter s | old splitter s | same sentences |")
    print("|---|---|---|---|---|")
    for size in map(int, args.sizes.split(",")):
        text = article(size)
        seconds, sentences = best_of(split_sentences, text)
        old, same = "not run", "-"
        if size <= args.old_up_to:
            old_seconds, old_sentences = best_of(old_split_sentences, text, repeats=1)
            old, same = f"{old_seconds:.3f}", str(old_sentences == sentences)
        print(f"| {size} | {len(sentences)} | {seconds:.3f} | {old} | {same} |")


if __name__ == "__main__":
    main()
