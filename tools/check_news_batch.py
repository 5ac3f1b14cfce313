"""Check one composed news-register batch file and print its statistics.

    python tools/check_news_batch.py annotations/corpus/news_01.jsonl

Reports every problem (bad JSON, missing fields, labels outside the schema, an unknown
register, a text that the project's splitter does not read as exactly one sentence,
ids that do not follow doc_id-sent_idx) and the distribution the corpus aims at:
counts per target and polarity, the share of sentences with no stance, words per
sentence, registers and articles.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from diplostance.text import split_sentences  # noqa: E402

schema = yaml.safe_load((ROOT / "annotations/schema.yaml").read_text(encoding="utf-8"))
TARGETS = list(schema["targets"])
POLARITIES = schema["polarities"]
REGISTERS = list(schema.get("registers") or [])


def main(path: str) -> int:
    problems, records = [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        try:
            r = json.loads(line)
        except json.JSONDecodeError as error:
            problems.append(f"{path}:{number}: invalid JSON: {error}")
            continue
        for name in ("id", "doc_id", "sent_idx", "text", "stances", "source", "annotator", "rationale", "register"):
            if name not in r:
                problems.append(f"{path}:{number}: missing {name}")
        if any(name not in r for name in ("id", "doc_id", "sent_idx", "text", "stances")):
            continue
        if r["id"] != f"{r['doc_id']}-{r['sent_idx']:02d}":
            problems.append(f"{path}:{number}: id {r['id']} is not doc_id-sent_idx")
        if r.get("source") != "composed":
            problems.append(f"{path}:{number}: source must be 'composed'")
        if REGISTERS and r.get("register") not in REGISTERS:
            problems.append(f"{path}:{number}: register {r.get('register')!r} not in {REGISTERS}")
        if sorted(r["stances"]) != sorted(TARGETS) or any(p not in POLARITIES for p in r["stances"].values()):
            problems.append(f"{path}:{number}: stances must give each of {TARGETS} one of {POLARITIES}")
        pieces = split_sentences(r["text"])
        if len(pieces) != 1:
            starts = [p.text[:30] for p in pieces]
            problems.append(f"{path}:{number}: the splitter reads {len(pieces)} sentences: {starts}")
        records.append(r)
    docs = Counter(r["doc_id"] for r in records)
    for doc in docs:
        idx = sorted(r["sent_idx"] for r in records if r["doc_id"] == doc)
        if idx != list(range(len(idx))):
            problems.append(f"{path}: {doc}: sent_idx must run 0..n-1 without gaps, got {idx}")
    print(f"{len(records)} sentences in {len(docs)} articles")
    for t in TARGETS:
        c = Counter(r["stances"][t] for r in records)
        print(f"  {t:18s} " + "  ".join(f"{p}={c[p]}" for p in POLARITIES))
    if records:
        none_all = sum(all(p == "none" for p in r["stances"].values()) for r in records)
        words = [len(r["text"].split()) for r in records]
        print(f"  no stance on any target: {none_all} ({none_all / len(records):.0%})")
        print(f"  words per sentence: mean {sum(words) / len(words):.1f}, min {min(words)}, max {max(words)}")
        registers = Counter(r.get("register") for r in records).most_common()
        print("  registers: " + ", ".join(f"{k}={v}" for k, v in registers))
    for p in problems:
        print(p)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
