"""The GPU check stops at once, with one line, on a machine without CUDA."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.conftest import ROOT, SAFETY_TIMEOUT_S


@pytest.mark.skipif(torch.cuda.is_available(), reason="describes a machine without a GPU")
def test_gpu_check_stops_with_one_line_and_exit_2_without_cuda(tmp_path):
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--workdir", str(tmp_path / "work")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and done.stderr.startswith("error: ")
    assert "CUDA" in done.stderr and not (tmp_path / "work").exists()
