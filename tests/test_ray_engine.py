"""The Ray Data engine on a real local Ray runtime (2 CPUs): the local engine's records, bad inputs
reported per file, and exactly-once output after the driver is killed and the command run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diplostance.labelling import label
from diplostance.labelling.ray_engine import MANIFEST, read_output
from tests.conftest import ROOT
from tests.test_labelling import BAD, EXPECTED_ERRORS, GOOD, _articles, read_jsonl, run_label

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="session")
def ray_runtime():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def both_engines(ray_runtime, tiny_model_dir, tmp_path_factory):
    """The same inputs through the local engine and the Ray engine (2 actors, files cut into 2-article parts)."""
    root = tmp_path_factory.mktemp("engines")
    run_label(tiny_model_dir, [GOOD, BAD], root / "local" / "OUT.jsonl")
    summary = run_label(tiny_model_dir, [GOOD, BAD], root / "ray" / "OUT.jsonl", engine="ray",
                        ray={"articles_per_part": 2, "concurrency": 2})  # fmt: skip
    return root, summary


def _exact(doc: dict) -> dict:
    targets = {t: {k: v for k, v in p.items() if k != "mean_probs"} for t, p in doc["targets"].items()}
    return {**doc, "targets": targets}


def test_the_ray_engine_writes_the_local_engines_records_summaries_and_errors(both_engines):
    root, summary = both_engines
    local = root / "local"
    assert read_output(str(root / "ray" / "OUT")) == read_jsonl(local / "OUT.jsonl")
    docs, expected = read_output(str(root / "ray" / "OUT"), "docs"), read_jsonl(local / "OUT.docs.jsonl")
    assert [_exact(d) for d in docs] == [_exact(d) for d in expected]  # the means may differ in the 7th digit:
    for doc, same in zip(docs, expected, strict=True):  # other batches, other padding, other float sums
        for target, profile in doc["targets"].items():
            assert profile["mean_probs"] == pytest.approx(same["targets"][target]["mean_probs"], abs=1e-5)
    assert summary.counts.sentences == len(read_jsonl(local / "OUT.jsonl"))


def test_the_ray_engine_reports_every_bad_input_per_file(both_engines):
    root, summary = both_engines
    errors = read_output(str(root / "ray" / "OUT"), "errors")
    assert summary.counts.failed == len(EXPECTED_ERRORS) == len(errors)
    for error in errors:
        assert EXPECTED_ERRORS[Path(error["file"]).name, error["line"]] in error["reason"]
    manifest = json.loads((root / "ray" / "OUT" / MANIFEST).read_text())
    assert manifest["totals"]["failed"] == len(EXPECTED_ERRORS) and len(manifest["parts"]) > 7  # sliced jsonl


def _label_command(*overrides: str, cwd: Path) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "scripts" / "label.py"), *overrides, f"hydra.run.dir={cwd / 'hydra'}"]
    return subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def test_a_killed_ray_run_finishes_on_the_next_run_with_every_sentence_once(ray_runtime, tiny_model_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(24):
        _articles(inputs / f"batch{i:02d}.jsonl", 3, seed=i)
    out = tmp_path / "run" / "OUT.parquet"
    args = [f"model_dir={tiny_model_dir}", f"inputs=[{inputs}]", f"output={out}", "engine=ray", "progress_bar=false",
            f"ray.address={ray_runtime}"]  # fmt: skip
    first = _label_command(*args, cwd=tmp_path)
    committed = tmp_path / "run" / "OUT" / "committed"
    deadline = time.monotonic() + 180
    while first.poll() is None and time.monotonic() < deadline and len(list(committed.glob("*.json"))) < 3:
        time.sleep(0.005)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, first.stderr.read()[-3000:]
    assert not (tmp_path / "run" / "OUT" / MANIFEST).exists(), "the run finished before it could be killed"
    before = {p.name: p.stat().st_mtime_ns for p in committed.glob("*.json")}

    second = _label_command(*args, cwd=tmp_path)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-3000:]
    assert "(resumed)" in stdout
    after = {p.name: p.stat().st_mtime_ns for p in committed.glob("*.json")}
    assert len(after) == 24 and all(after[name] == mtime for name, mtime in before.items())  # not redone

    reference = tmp_path / "ref" / "OUT.jsonl"
    label({"model_dir": str(tiny_model_dir), "inputs": [str(inputs)], "output": str(reference), "progress_bar": False})
    records = read_output(str(tmp_path / "run" / "OUT"))
    expected = read_jsonl(reference)
    assert len({(r["source"], r["sent_idx"]) for r in records}) == len(records) == len(expected)
    assert [(r["source"], r["text"], r["stances"]) for r in records] == [
        (r["source"], r["text"], r["stances"]) for r in expected
    ]
