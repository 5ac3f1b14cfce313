"""The quality gate refuses, before any retraining, what it cannot judge with or would write over (issues 18, 20)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from diplostance.gate import OUT_MARKER, prepare_out_dir
from diplostance.regression import GateError
from tests.conftest import ROOT, SAFETY_TIMEOUT_S


def gate_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "quality_gate.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT_S,  # the refusals come before any retraining (minutes)
    )


def committed_baseline() -> dict:
    return json.loads((ROOT / "benchmarks" / "quality_baseline.json").read_text(encoding="utf-8"))


def test_an_entry_without_tolerance_stops_the_gate_before_training_with_exit_2(tmp_path):
    baseline = committed_baseline()
    del baseline["models"]["tfidf"]["tolerance"]
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline), encoding="utf-8")
    result = gate_script("--models", "tfidf", f"--baseline={path}", f"--out={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: baseline: models.tfidf: has no 'tolerance'")
    assert result.stderr.count("\n") == 1 and not (tmp_path / "out" / "tfidf").exists()


def test_a_nan_tolerance_stops_the_gate_before_training(tmp_path):
    baseline = committed_baseline()
    baseline["models"]["tfidf"]["tolerance"]["macro_f_avg"] = float("nan")
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline), encoding="utf-8")  # json writes NaN, and reads it back
    result = gate_script("--models", "tfidf", f"--baseline={path}", f"--out={tmp_path / 'out'}")
    assert result.returncode == 2 and "tolerance.macro_f_avg is nan" in result.stderr


def test_the_summary_file_is_never_the_baseline(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(committed_baseline()), encoding="utf-8")
    before = path.read_bytes()
    result = gate_script("--models", "tfidf", f"--baseline={path}", f"--summary-file={path}", f"--out={tmp_path / 'o'}")
    assert result.returncode == 2 and "is the input" in result.stderr
    assert path.read_bytes() == before and not (tmp_path / "o").exists()


def test_a_previous_gate_folder_holding_the_baseline_is_not_emptied(tmp_path):
    out = tmp_path / "gate"
    out.mkdir()
    (out / OUT_MARKER).write_text("written by scripts/quality_gate.py\n")
    baseline = out / "baseline.json"
    baseline.write_text("{}")
    with pytest.raises(GateError, match="would hold or replace the input") as raised:
        prepare_out_dir(out, [baseline])
    assert raised.value.exit_code == 2 and baseline.read_text() == "{}"
