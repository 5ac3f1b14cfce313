"""Inter-annotator agreement on the blind second annotation of corpus v2.

    python tools/agreement.py [annotations/agreement/sample_150.jsonl]

The file holds a random sample of 150 news-register sentences (seeded draw from the 1,298
new records), each with the first annotator's labels (`first`, as written), a second
annotator's blind labels (`second`, made without seeing the first) and the adjudicated
labels now in the corpus (`adjudicated`). Prints Cohen's kappa and raw agreement per
target, and the adjudication outcome of every disagreement.
"""

import json
import sys
from collections import Counter
from pathlib import Path

from sklearn.metrics import cohen_kappa_score

DEFAULT = Path(__file__).resolve().parents[1] / "annotations/agreement/sample_150.jsonl"
path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT
rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
targets = list(rows[0]["first"])
print(f"{len(rows)} sentences, {path}")
print("| target | Cohen's kappa | raw agreement | disagreements | adjudicated as first / second / neither |")
print("|---|---|---|---|---|")
for t in targets:
    a, b = [r["first"][t] for r in rows], [r["second"][t] for r in rows]
    outcome = Counter(
        next((who for who in ("first", "second") if r["adjudicated"][t] == r[who][t]), "neither")
        for r in rows
        if r["first"][t] != r["second"][t]
    )
    agree = sum(x == y for x, y in zip(a, b, strict=True)) / len(rows)
    print(
        f"| {t} | {cohen_kappa_score(a, b):.3f} | {agree:.3f} | {sum(x != y for x, y in zip(a, b, strict=True))} | "
        f"{outcome['first']} / {outcome['second']} / {outcome['neither']} |"
    )
