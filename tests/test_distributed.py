"""Multi-process training: torchrun with 2 CPU processes (gloo) trains one model with DDP into one run folder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForSequenceClassification

from tests.conftest import ROOT, SAFETY_TIMEOUT_S

TORCHRUN = Path(sys.executable).with_name("torchrun")
SMALL = ["model=tiny", "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
         "model.vocab_size=800", "training.epochs=2", "training.num_threads=1", "bootstrap_resamples=0",
         "compare_baseline=false"]  # fmt: skip


def small_dataset(path: Path, n: int = 160) -> None:
    records = [json.loads(line) for line in (ROOT / "annotations" / "corpus").glob("*.jsonl").__next__().open()]
    with path.open("w", encoding="utf-8") as handle:
        for record in records[:n]:
            handle.write(json.dumps({"text": record["text"], "stances": record["stances"]}, ensure_ascii=False) + "\n")


@pytest.mark.slow
def test_torchrun_with_two_cpu_processes_writes_one_complete_loadable_run(tmp_path):
    small_dataset(tmp_path / "small.jsonl")
    data = ["data=file", "data.format=jsonl", "data.layout=wide", f"data.path={tmp_path / 'small.jsonl'}"]
    command = [str(TORCHRUN), "--standalone", "--nproc_per_node=2", str(ROOT / "scripts" / "train.py"),
               "training=ci", *SMALL, *data]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-4000:]
    runs = list((tmp_path / "outputs" / "train").iterdir())
    assert len(runs) == 1, runs  # both ranks wrote into rank 0's folder
    metrics = json.loads((runs[0] / "metrics.json").read_text())
    assert metrics["training"]["world_size"] == 2
    model = AutoModelForSequenceClassification.from_pretrained(runs[0] / "model")
    assert model.config.num_labels == 9 and (runs[0] / "report.md").is_file()
    assert done.stdout.count("| **overall** |") == 1  # rank 0 alone evaluated and reported
