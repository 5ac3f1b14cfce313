"""The private real development set: write its text-free manifest, or rebuild the labelled file from saved pages.

python benchmarks/realdev.py manifest [--labelled FILE] [--out benchmarks/realdev_manifest.jsonl] [--overwrite]
python benchmarks/realdev.py rebuild --pages DIR --out FILE [--manifest benchmarks/realdev_manifest.jsonl] [--overwrite]
python benchmarks/realdev.py score MODEL_DIR [MODEL_DIR ...] [--labelled FILE] [--probs-dir DIR] [--threads N]

The set itself (real news sentences, labelled twice blind and adjudicated) is never committed: the
manifest holds, per sentence, its id, url, title, query, page_sentence_idx, the sha1 of its text
(UTF-8) and its stances, and no text. A page file holds the page's url on its first line and the
page excerpt after it, as the search tool returned it. `rebuild` splits each page's excerpt with
diplostance.text.split_sentences (after the pages corpus's leading "date YYYY-MM-DD" header, which
is not page text) and keeps the sentences whose sha1 the manifest lists, so anyone holding the pages
can rebuild the set, and anyone holding another set can check its overlap by sha1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from diplostance.annotations import load_schema  # noqa: E402
from diplostance.errors import UserError  # noqa: E402
from diplostance.output_guard import check_output_files  # noqa: E402
from diplostance.outputs import atomic_write_text  # noqa: E402
from diplostance.text import split_sentences  # noqa: E402

PRIVATE_FILE = Path("/work/private/realdev/realdev.jsonl")
MANIFEST_FILE = ROOT / "benchmarks" / "realdev_manifest.jsonl"
MANIFEST_FIELDS = ("id", "url", "title", "query", "page_sentence_idx", "sha1", "stances")
DATE_HEADER = re.compile(r"^\s*date \d{4}-\d{2}-\d{2} ")


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def page_sentences(excerpt: str) -> list[str]:
    """The sentences of a saved page excerpt, in order; their positions are page_sentence_idx."""
    return [s.text for s in split_sentences(DATE_HEADER.sub("", excerpt))]


def read_jsonl(path: Path, required: tuple[str, ...]) -> list[dict]:
    """Records of a JSON Lines file; a bad line is a one-line error naming the file, line and rule."""
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{path}:{number}: not JSON ({error.msg})") from error
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: a record must be a JSON object")
        missing = [key for key in required if key not in record]
        if missing:
            raise UserError(f"{path}:{number}: missing field(s) {missing}")
        records.append(record)
    return records


def check_stances(path: Path, number: int, stances: object, targets, polarities) -> None:
    if not isinstance(stances, dict) or set(stances) != set(targets):
        raise UserError(f"{path}:{number}: stances must give every target of schema.yaml {list(targets)}")
    bad = {t: p for t, p in stances.items() if p not in polarities}
    if bad:
        raise UserError(f"{path}:{number}: polarity not in {list(polarities)}: {bad}")


def manifest(labelled: Path, out: Path, overwrite: bool) -> None:
    check_output_files({"--out": out}, [labelled], overwrite)
    space = load_schema(ROOT / "annotations")
    rows, seen = [], set()
    for number, record in enumerate(read_jsonl(labelled, (*MANIFEST_FIELDS, "text")), 1):
        if sha1(record["text"]) != record["sha1"]:
            raise UserError(f"{labelled}:{number}: sha1 is not the sha1 of the text (UTF-8)")
        if record["id"] in seen:
            raise UserError(f"{labelled}:{number}: id {record['id']!r} appears twice")
        seen.add(record["id"])
        check_stances(labelled, number, record["stances"], space.targets, space.polarities)
        rows.append({key: record[key] for key in MANIFEST_FIELDS})
    atomic_write_text(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    print(f"wrote {out}: {len(rows)} sentences from {len({r['url'] for r in rows})} pages, no text")


def read_pages(folder: Path) -> dict[str, list[str]]:
    """url -> sentences of every page file in the folder (url on the first line, the excerpt after it)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder of page files")
    pages: dict[str, list[str]] = {}
    for path in sorted(folder.glob("*.txt")):
        url, _, excerpt = path.read_text(encoding="utf-8").partition("\n")
        if not url.startswith(("http://", "https://")):
            raise UserError(f"{path}:1: the first line must be the page's url")
        pages.setdefault(url.strip(), []).extend(page_sentences(excerpt))
    return pages


def rebuild(pages_dir: Path, manifest_path: Path, out: Path, overwrite: bool) -> int:
    check_output_files({"--out": out}, [manifest_path], overwrite)
    rows = read_jsonl(manifest_path, MANIFEST_FIELDS)
    pages = read_pages(pages_dir)
    anywhere = {sha1(text): text for sentences in pages.values() for text in sentences}
    found, missing, moved = [], [], 0
    for row in rows:
        sentences = pages.get(row["url"], [])
        index = row["page_sentence_idx"]
        if isinstance(index, int) and 0 <= index < len(sentences) and sha1(sentences[index]) == row["sha1"]:
            text = sentences[index]
        else:  # the page changed or the splitter did: look for the sentence anywhere
            text = anywhere.get(row["sha1"])
            moved += text is not None
        if text is None:
            missing.append(row["id"])
        else:
            found.append({**row, "text": text})
    atomic_write_text(out, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in found))
    print(
        f"found {len(found)} of {len(rows)} sentences ({moved} away from their recorded position) "
        f"in {len(pages)} page files; wrote {out}"
    )
    if missing:
        shown = ", ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
        print(f"missing {len(missing)}: {shown}")
    return 0 if found else 1


def score(model_dirs: list[Path], labelled: Path, probs_dir: Path | None, threads: int) -> None:
    """Score saved model folders on the private set: macro_f_avg and each target's f_avg with 95%
    bootstrap intervals; with --probs-dir, each model's probabilities (n, targets, polarities) as .npy
    beside the gold labels, for choosing ensemble weights and offsets."""
    import numpy as np
    import torch

    from diplostance.predictors import load_predictor
    from diplostance.scoring import bootstrap_intervals, stance_scores

    torch.set_num_threads(threads)
    records = read_jsonl(labelled, ("id", "text", "stances"))
    labels = load_schema(ROOT / "annotations")
    targets, polarities = list(labels.targets), list(labels.polarities)
    gold = np.array([[polarities.index(r["stances"][t]) for t in targets] for r in records])
    texts = [r["text"] for r in records]
    if probs_dir is not None:
        probs_dir.mkdir(parents=True, exist_ok=True)
        np.save(probs_dir / "gold.npy", gold)
    for model_dir in model_dirs:
        probs = load_predictor(model_dir, num_threads=threads).predict_proba(texts)
        pred = probs.argmax(-1)
        scores = stance_scores(pred, gold, targets, polarities, undefined=None)
        bounds = bootstrap_intervals(pred, gold, targets, polarities)
        per_target = "  ".join(f"{t} {s['f_avg']:.3f}" for t, s in scores["targets"].items())
        low, high = bounds["macro_f_avg"]
        macro = scores["macro_f_avg"]
        print(f"{model_dir}: macro_f_avg {macro:.3f} [{low:.3f}, {high:.3f}]  {per_target}  n={len(gold)}")
        if probs_dir is not None:
            name = str(model_dir).strip("/").replace("/", "__")
            np.save(probs_dir / f"{name}.npy", probs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("manifest", help="write the text-free manifest from the private labelled file")
    make.add_argument("--labelled", type=Path, default=PRIVATE_FILE)
    make.add_argument("--out", type=Path, default=MANIFEST_FILE)
    make.add_argument("--overwrite", action="store_true")
    build = commands.add_parser("rebuild", help="rebuild the labelled file from the manifest and saved pages")
    build.add_argument("--pages", type=Path, required=True, help="folder of page files (url, then the excerpt)")
    build.add_argument("--out", type=Path, required=True)
    build.add_argument("--manifest", type=Path, default=MANIFEST_FILE)
    build.add_argument("--overwrite", action="store_true")
    judge = commands.add_parser("score", help="score model folders on the private labelled set")
    judge.add_argument("model_dirs", type=Path, nargs="+")
    judge.add_argument("--labelled", type=Path, default=PRIVATE_FILE)
    judge.add_argument("--probs-dir", type=Path, default=None, help="save each model's probabilities here")
    judge.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        if args.command == "score":
            score(args.model_dirs, args.labelled, args.probs_dir, args.threads)
            return 0
        if args.command == "manifest":
            manifest(args.labelled, args.out, args.overwrite)
            return 0
        return rebuild(args.pages, args.manifest, args.out, args.overwrite)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", 2)


if __name__ == "__main__":
    sys.exit(main())
