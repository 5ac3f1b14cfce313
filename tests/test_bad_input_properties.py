"""Property-based: broken inputs through the real entry points (issue 9).

Hypothesis generates annotation folders, data files and labelling inputs that mix good
records with broken ones, runs `validate`, `evaluate.py` and `label.py` as subprocesses,
and checks for every input: the exit status is 0, 1 or 2; stderr holds no traceback; the
inputs are byte-identical afterwards; every good record is still processed (and, where the
entry point refuses bad data, every bad record is named). Examples are few: each one is a
process start, and the suite must stay within about two minutes.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ROOT, SAFETY_TIMEOUT_S

FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEWER = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
WORDS = ["الأمم", "المتحدة", "اتفاقية", "ملزمة", "الحوار", "الثنائي", "الإنترنت", "نرفض", "ندعم", "الأمن"]


def run(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S)


def digests(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


def check_run(result: subprocess.CompletedProcess, inputs: Path, before: dict[str, str]) -> None:
    assert result.returncode in (0, 1, 2), result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert digests(inputs) == before, "an input changed"


def sentence(i: int) -> str:
    return f"{WORDS[i % len(WORDS)]} {WORDS[(i * 7 + 3) % len(WORDS)]} رقم {i}."


# ---------------------------------------------------------------- annotation folders -> validate

BROKEN_LINES = st.sampled_from(
    [
        b"",  # blank line
        b"{not json",
        b"[1, 2, 3]",
        b'{"id": "x"}',  # fields missing
        b'{"id": 5, "doc_id": "d", "sent_idx": 0, "text": "t", "stances": {}, "source": "composed", "annotator": "a"}',
        b'{"id": "\xff\xfe", "text": "not utf-8"}',
        b"\x00\x01\x02 binary",
    ]
)


def annotation_record(i: int, text: str) -> bytes:
    record = {
        "id": f"g{i}",
        "doc_id": "gen",
        "sent_idx": i,
        "text": text,
        "stances": {"un_treaty": "favor"},
        "source": "composed",
        "annotator": "hypothesis",
        "rationale": "generated",
    }
    return json.dumps(record, ensure_ascii=False).encode("utf-8")


@FEW
@given(
    lines=st.lists(
        st.one_of(st.tuples(st.just("good"), st.sampled_from(["نص", "نص\u0000", "ن" * 6000])), BROKEN_LINES)
    ),
    schema_broken=st.booleans(),
)
def test_validate_on_broken_annotation_files(tmp_path_factory, lines, schema_broken):
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    annotations = folder / "annotations"
    (annotations / "corpus").mkdir(parents=True)
    (folder / "seeds").mkdir()
    shutil.copy(ROOT / "annotations" / "schema.yaml", annotations / "schema.yaml")
    if schema_broken:
        (annotations / "schema.yaml").write_bytes(b"targets: [un_treaty\n")
    (annotations / "splits.yaml").write_text("train: [gen]\ndev: []\ntest: []\n", encoding="utf-8")
    body, good = [], 0
    for line in lines:
        if isinstance(line, tuple):
            body.append(annotation_record(len(body), line[1]))
            good += 1
        else:
            body.append(line)
    (annotations / "corpus" / "gen.jsonl").write_bytes(b"\n".join(body) + b"\n")
    before = digests(folder)

    result = run(["-m", "diplostance", "validate", str(annotations)])

    check_run(result, folder, before)
    if not schema_broken:  # every well-formed record is read, whatever breaks around it
        assert f"\n{good} records," in result.stdout, result.stdout[-1000:]


# ---------------------------------------------------------------- data files -> evaluate.py

GOOD, REPEAT = "good", "repeat"
ILLEGAL = ("conflict", "unknown_polarity", "empty_text", "control_character")
ROW_KINDS = st.sampled_from([GOOD, GOOD, GOOD, REPEAT, *ILLEGAL])


@pytest.mark.slow  # a process start per example
@FEWER
@given(
    kinds=st.lists(ROW_KINDS, min_size=1, max_size=12),
    polarity=st.sampled_from(["favor", "AGAINST", "None", "neutral"]),
)
def test_evaluate_on_broken_data_files(tmp_path_factory, small_tfidf_model_dir, kinds, polarity):
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    inputs = folder / "inputs"
    inputs.mkdir()
    rows, good_rows, good_texts, illegal_lines = [], [], set(), []
    for kind in kinds:
        line = len(rows) + 2  # the header is line 1
        previous = good_rows[-1] if good_rows else None
        if kind == GOOD or (kind in (REPEAT, "conflict") and previous is None):
            rows.append([sentence(line), "treaty", polarity])
            good_rows.append(rows[-1])
            good_texts.add(rows[-1][0])
        elif kind == REPEAT:
            rows.append(list(previous))
        elif kind == "conflict":
            rows.append([previous[0], previous[1], "favor" if previous[2].lower() != "favor" else "against"])
            illegal_lines.append(line)
        elif kind == "unknown_polarity":
            rows.append([sentence(line), "governance", "maybe"])
            illegal_lines.append(line)
        elif kind == "empty_text":
            rows.append(["", "treaty", "favor"])
            illegal_lines.append(line)
        else:
            rows.append([sentence(line) + "\x01", "treaty", "favor"])
            illegal_lines.append(line)
    with (inputs / "test.csv").open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows([["text", "target", "stance"], *rows])
    before = digests(inputs)
    run_dir = folder / "run"

    result = run(
        [
            str(ROOT / "scripts" / "evaluate.py"),
            f"model_dir={small_tfidf_model_dir}",
            "data=file",
            f"data.test={inputs / 'test.csv'}",
            f"hydra.run.dir={run_dir}",
            "bootstrap_resamples=0",
        ]
    )

    check_run(result, inputs, before)
    if illegal_lines:  # refused as a whole, and every bad row named
        assert result.returncode == 1
        for line in illegal_lines:
            assert f"line {line}:" in result.stderr, (line, result.stderr[-2000:])
    else:  # every good sentence scored, each once
        assert result.returncode == 0, result.stderr[-2000:]
        predictions = (run_dir / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
        assert sorted(json.loads(p)["text"] for p in predictions) == sorted(good_texts)


# ---------------------------------------------------------------- labelling inputs -> label.py

BAD_TXT = st.sampled_from([b"", b"   \n\t", b"\x00\x01binary\x00", "نص".encode() + b"\xff\xfe", b"\xef\xbb"])
BAD_JSONL_LINES = st.sampled_from(
    [b"{oops", b"[]", b'{"id": "x"}', b'{"id": true, "text": "t"}', b'{"id": "y", "text": 5}', b"\xff\n"]
)


@pytest.mark.slow  # a process start per example
@FEWER
@given(
    good_txt=st.integers(0, 3),
    bad_txt=st.lists(BAD_TXT, max_size=3),
    jsonl=st.lists(st.one_of(st.just(None), BAD_JSONL_LINES), max_size=6),
)
def test_label_on_mixed_inputs(tmp_path_factory, small_tfidf_model_dir, good_txt, bad_txt, jsonl):
    folder = Path(tempfile.mkdtemp(dir=tmp_path_factory.getbasetemp()))
    inputs = folder / "inputs"
    inputs.mkdir()
    good_ids = set()
    for i in range(good_txt):
        (inputs / f"good{i}.txt").write_text(" ".join(sentence(i + j) for j in range(3)), encoding="utf-8")
        good_ids.add(f"good{i}")
    for i, content in enumerate(bad_txt):
        (inputs / f"bad{i}.txt").write_bytes(content)
    lines = []
    for i, line in enumerate(jsonl):
        if line is None:
            lines.append(json.dumps({"id": f"article{i}", "text": sentence(i)}, ensure_ascii=False).encode())
            good_ids.add(f"article{i}")
        else:
            lines.append(line)
    if jsonl:
        (inputs / "more.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    before = digests(inputs)
    output = folder / "out" / "labelled.jsonl"

    result = run(
        [
            str(ROOT / "scripts" / "label.py"),
            f"model_dir={small_tfidf_model_dir}",
            f"inputs=[{inputs}]",
            f"output={output}",
            "progress_bar=false",
            f"hydra.run.dir={folder / 'run'}",
        ]
    )

    check_run(result, inputs, before)
    if result.returncode == 2:  # the run could not start: only when there is nothing at all to read
        assert not good_ids and not bad_txt and not jsonl, result.stderr[-2000:]
        return
    docs = output.with_name("labelled.docs.jsonl").read_text(encoding="utf-8").splitlines()
    assert {json.loads(d)["doc_id"] for d in docs} == good_ids
    expected_failures = bool(bad_txt) or any(line is not None for line in jsonl)
    assert result.returncode == (1 if expected_failures else 0), result.stderr[-2000:]


@pytest.fixture(autouse=True)
def _no_debug_tracebacks(monkeypatch):
    monkeypatch.delenv("DIPLOSTANCE_DEBUG", raising=False)
