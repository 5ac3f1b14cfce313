"""The seed articles are shipped byte for byte."""

from __future__ import annotations

import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SEED_SHA256 = {
    "000_7f1f4f758ab52af3.txt": "2d4fb4fb6e05bec6396c3fd1a8e9ced13b3c9defe05c6530c110a79aa113d1d1",
    "002_4329a9ca99b3442b.txt": "d86b37be8230e920b87b5468e40ed51469c87b7dc8c0bccfad31dd10863dfa58",
    "003_9d49735d6995ce8f.txt": "07ad3a000034309990c77f823aee3473e26b6f95b441bf9d8ff07df2eac6605f",
}


def test_seed_articles_match_their_sha256_sums():
    sums = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in (ROOT / "seeds").glob("*.txt")}
    assert sums == SEED_SHA256
