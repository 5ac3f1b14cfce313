"""One sentence-length limit (text.MAX_SENTENCE_CHARS) for validate, the Label Studio importer and data=file."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from diplostance.annotations import load_corpus, load_schema
from diplostance.data import DataError, load_data
from diplostance.labelstudio.importer import convert_tasks
from diplostance.text import MAX_SENTENCE_CHARS
from tests.conftest import ROOT, compose_config

LONG = "كلمة " * 1200  # 6,000 characters
SHORT = "ندعم اتفاقية أممية ملزمة."


def test_the_long_row_is_over_the_limit():
    assert len(LONG) == 6000 > MAX_SENTENCE_CHARS


def test_data_file_refuses_a_row_longer_than_the_limit(tmp_path):
    train = tmp_path / "train.csv"
    with train.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerows([["text", "target", "stance"], [SHORT, "treaty", "favor"], [LONG, "treaty", "against"]])
    cfg = compose_config("train", ["data=file", f"data.train={train}", "data.dev_fraction=0"]).data
    with pytest.raises(DataError, match=f"6000 characters long, more than the {MAX_SENTENCE_CHARS}"):
        load_data(cfg)


def test_validate_and_the_importer_refuse_the_same_row(tmp_path):
    directory = tmp_path / "annotations"
    directory.mkdir()
    shutil.copy(ROOT / "annotations" / "schema.yaml", directory / "schema.yaml")
    record = {"id": "c1-0", "doc_id": "c1", "sent_idx": 0, "text": LONG, "stances": {"un_treaty": "none"},
              "source": "composed", "annotator": "t", "rationale": "r"}  # fmt: skip
    (directory / "c.jsonl").write_text(json.dumps(record, ensure_ascii=False) + "\n", encoding="utf-8")
    (directory / "splits.yaml").write_text("train: [c1]\n", encoding="utf-8")
    assert [p.rule for p in load_corpus(directory, tmp_path / "seeds").problems] == ["bad-text"]
    labels = load_schema(ROOT / "annotations")
    task = {"id": 1, "data": {"text": LONG, "doc_id": "n", "sent_idx": 0}, "annotations": []}
    assert f"more than the {MAX_SENTENCE_CHARS}" in convert_tasks([task], labels).review[0]["reasons"][0]
