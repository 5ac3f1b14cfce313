"""The Ray Data engine on a real local Ray runtime (2 CPUs, one for the whole session): the local engine's
records, bad inputs reported per file, exactly-once output after the driver is killed and the command run
again, and the rules on what an output folder may already hold (issue 20)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diplostance.labelling import LabellingError, label
from diplostance.labelling.ray_engine import MANIFEST, read_output
from tests.conftest import ROOT, SAFETY_TIMEOUT_S, approx_floats
from tests.test_labelling import BAD, EXPECTED_ERRORS, FIXTURES, GOOD, _articles, read_jsonl, run_label

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="session")
def ray_runtime():
    """One local runtime for the session. Ray gives a starting node a fixed 30 s to register, which a loaded
    2-core machine can miss ("The current node timed out during startup"): a failed start is retried."""
    for attempt in range(5):
        try:
            ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
            break
        except Exception:
            ray.shutdown()
            if attempt == 4:
                raise
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


def test_the_ray_engine_writes_the_local_engines_records_summaries_and_errors(both_engines):
    root, summary = both_engines
    local = root / "local"
    # Stances and every other field exactly; probabilities within PROB_TOL: the actors run other batches
    # with other thread counts, which change the last digits (0.33036 against 0.330361).
    assert read_output(str(root / "ray" / "OUT")) == approx_floats(read_jsonl(local / "OUT.jsonl"))
    assert read_output(str(root / "ray" / "OUT"), "docs") == approx_floats(read_jsonl(local / "OUT.docs.jsonl"))
    assert read_output(str(root / "ray" / "OUT"), "errors") == read_jsonl(local / "OUT.errors.jsonl")
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


def _wait_for_first_commit(process: subprocess.Popen, committed: Path) -> None:
    """Until a part is committed (or the process ends): the event the kill waits for, whatever the load."""
    deadline = time.monotonic() + SAFETY_TIMEOUT_S
    while process.poll() is None and not any(committed.glob("*.json")):
        assert time.monotonic() < deadline, "no part was committed within the safety timeout"
        time.sleep(0.005)


def test_a_killed_ray_run_finishes_on_the_next_run_with_every_sentence_once(ray_runtime, tiny_model_dir, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(24):  # 24 parts: the first commit leaves 23 to do, far more than the kill takes
        _articles(inputs / f"batch{i:02d}.jsonl", 2, seed=i)
    out = tmp_path / "run" / "OUT.parquet"
    args = [f"model_dir={tiny_model_dir}", f"inputs=[{inputs}]", f"output={out}", "engine=ray", "progress_bar=false",
            f"ray.address={ray_runtime}"]  # fmt: skip
    first = _label_command(*args, cwd=tmp_path)
    committed = tmp_path / "run" / "OUT" / "committed"
    _wait_for_first_commit(first, committed)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, first.stderr.read()[-3000:]
    assert not (tmp_path / "run" / "OUT" / MANIFEST).exists(), "the run finished before it could be killed"
    before = {p.name: p.stat().st_mtime_ns for p in committed.glob("*.json")}

    second = _label_command(*args, cwd=tmp_path)
    stdout, stderr = second.communicate(timeout=SAFETY_TIMEOUT_S)
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


# ---------------------------------------------------------------------------- what an output folder may hold


RAY = {"articles_per_part": 2, "concurrency": 1}  # the parts of both_engines' Ray run; one actor is enough here


def _interrupted_copy(both_engines, tmp_path: Path) -> Path:
    """A copy of both_engines' finished Ray output as a kill after the last commit leaves it: no manifest."""
    out = tmp_path / "OUT"
    shutil.copytree(both_engines[0] / "ray" / "OUT", out)
    (out / MANIFEST).unlink()
    return out


def _record_files(out: Path) -> list[dict]:
    """Every row under records/, as a reader that globs the folder (pandas, Spark) would see it."""
    return [json.loads(line) for f in sorted((out / "records").glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_a_resume_with_another_spelling_of_the_inputs_keeps_the_committed_parts(both_engines, tiny_model_dir,
                                                                                 tmp_path, monkeypatch):  # fmt: skip
    out = _interrupted_copy(both_engines, tmp_path)
    markers = sorted((out / "committed").glob("*.json"))
    markers[-1].unlink()  # one part was not committed when the run was killed
    before = {p.name: p.stat().st_mtime_ns for p in markers[:-1]}
    monkeypatch.chdir(FIXTURES)
    summary = run_label(tiny_model_dir, [GOOD.name, BAD.name], tmp_path / "OUT.jsonl", engine="ray", ray=RAY)
    assert summary.resumed
    after = {p.name: p.stat().st_mtime_ns for p in (out / "committed").glob("*.json")}
    assert set(after) == {*before, markers[-1].name} and all(after[n] == t for n, t in before.items())
    expected = read_jsonl(both_engines[0] / "local" / "OUT.jsonl")  # absolute inputs: the same sources
    assert len(_record_files(out)) == summary.counts.sentences == len(expected)
    assert read_output(str(out)) == approx_floats(expected)


@pytest.mark.parametrize("damage", ["deleted", "truncated"])
def test_a_commit_marker_whose_records_file_is_missing_or_short_is_not_trusted(both_engines, tmp_path,
                                                                               tiny_model_dir, damage):  # fmt: skip
    out = _interrupted_copy(both_engines, tmp_path)
    part = next(p for p in sorted((out / "records").glob("*.jsonl")) if p.read_text().count("\n") > 1)
    if damage == "deleted":
        part.unlink()
    else:
        part.write_text("".join(part.read_text().splitlines(keepends=True)[:-1]))
    summary = run_label(tiny_model_dir, [GOOD, BAD], tmp_path / "OUT.jsonl", engine="ray", ray=RAY)
    assert summary.resumed
    expected = read_jsonl(both_engines[0] / "local" / "OUT.jsonl")
    assert read_output(str(out)) == approx_floats(expected) and summary.counts.sentences == len(expected)


@pytest.mark.parametrize("where", ["beside the parts", "among the records"])
def test_an_output_folder_holding_other_files_is_refused(both_engines, tiny_model_dir, tmp_path, where):
    if where == "beside the parts":
        (tmp_path / "OUT").mkdir()
        foreign = tmp_path / "OUT" / "notes.csv"
    else:
        foreign = _interrupted_copy(both_engines, tmp_path) / "records" / "mine.jsonl"
    foreign.write_text('{"doc_id": "not labelled by this run"}\n')
    listing = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(LabellingError, match="does not write"):
        run_label(tiny_model_dir, [GOOD, BAD], tmp_path / "OUT.jsonl", engine="ray", ray=RAY)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == listing


def test_a_resume_with_another_part_size_is_refused(both_engines, tiny_model_dir, tmp_path):
    _interrupted_copy(both_engines, tmp_path)
    with pytest.raises(LabellingError, match=r"changed: ray\.articles_per_part"):
        run_label(tiny_model_dir, [GOOD, BAD], tmp_path / "OUT.jsonl", engine="ray",
                  ray={**RAY, "articles_per_part": 3})  # fmt: skip


def test_an_actor_pool_the_runtime_cannot_place_is_refused_before_any_work(ray_runtime, tiny_model_dir, tmp_path):
    gpus = ray.cluster_resources().get("GPU", 0)  # none on a CPU machine: 1 GPU per actor can never be placed
    with pytest.raises(LabellingError, match="num_gpus_per_actor"):
        run_label(tiny_model_dir, [GOOD], tmp_path / "OUT.jsonl", engine="ray", ray={"num_gpus_per_actor": gpus + 1})
    assert not (tmp_path / "OUT").exists()
