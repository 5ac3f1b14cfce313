"""Benchmarks' output options follow the rule of every command that writes (issue 18): a --workdir is never a
folder of the user's own files or an input, an --out or --json file that exists is refused unless --overwrite."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from diplostance.output_guard import WORKDIR_MARKER, work_folder
from diplostance.outputs import OutputPathError
from tests.conftest import ROOT, SAFETY_TIMEOUT_S


def benchmark(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT_S,  # the refusals come before any work (minutes)
    )


def own_files(tmp_path: Path) -> Path:
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes", encoding="utf-8")
    return folder


def test_a_work_folder_is_new_empty_or_one_a_benchmark_made(tmp_path):
    made = work_folder(tmp_path / "new", "x-")
    (made / "model").mkdir()
    assert work_folder(made, "x-") == made  # reused: it holds the marker
    with pytest.raises(OutputPathError, match="holds files a benchmark did not write"):
        work_folder(own_files(tmp_path), "x-")
    assert not (tmp_path / "mine" / WORKDIR_MARKER).exists()


def test_a_work_folder_is_never_an_input_or_inside_one(tmp_path):
    with pytest.raises(OutputPathError, match="the input"):
        work_folder(ROOT / "annotations" / "bench", "x-", [ROOT / "annotations"])
    assert not (ROOT / "annotations" / "bench").exists()


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("label_scale.py", ["--sentences", "10", "--files", "1", "--model", "no-model"]),
        ("label_memory.py", ["--sizes", "10", "--model", "no-model"]),
        ("label_throughput.py", ["--quick", "--skip-agreement", "--trained-model", "no-model"]),
    ],
)
def test_a_benchmark_refuses_a_workdir_of_the_users_files(tmp_path, name, extra):
    folder = own_files(tmp_path)
    result = benchmark(name, "--workdir", str(folder), *extra)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith("error: --workdir") and result.stderr.count("\n") == 1
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]


def test_onnx_agreement_refuses_an_existing_json_file(tmp_path):
    out = tmp_path / "rows.json"
    out.write_text("mine", encoding="utf-8")
    result = benchmark("onnx_agreement.py", str(tmp_path / "no-model"), "--json", str(out))
    assert result.returncode == 2 and "already exists" in result.stderr and out.read_text(encoding="utf-8") == "mine"


def test_active_learning_refuses_earlier_outputs_before_any_work(tmp_path):
    (tmp_path / "active_learning.md").write_text("earlier run", encoding="utf-8")
    result = benchmark("active_learning.py", "--out", str(tmp_path))
    assert result.returncode == 2 and "already exists" in result.stderr and "--overwrite" in result.stderr
    assert (tmp_path / "active_learning.md").read_text(encoding="utf-8") == "earlier run"
