"""The ONNX Runtime backend: export, outputs against torch, int8 agreement, the cache, the commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoModelForSequenceClassification

from diplostance.cli import main as cli
from diplostance.errors import UserError
from diplostance.predictors import check_model_folder, load_predictor
from diplostance.predictors.onnx import (
    ONNX_CONFIG,
    ONNX_FILES,
    OnnxPredictor,
    cpu_extensions,
    int8_scheme_for,
    usable_export,
    weights_hash,
)
from tests.conftest import ROOT, SAFETY_TIMEOUT_S


def corpus_texts(n: int) -> list[str]:
    """Sentences of the seed annotations: short and long, so batches pad to many widths."""
    lines = (ROOT / "annotations" / "seeds.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[:n]]


@pytest.fixture(scope="module")
def model_copy(tiny_model_dir, tmp_path_factory) -> Path:
    """A copy of the tiny model without an export (the session's folder stays untouched)."""
    folder = tmp_path_factory.mktemp("onnx") / "model"
    shutil.copytree(tiny_model_dir, folder)
    return folder


@pytest.fixture(scope="module")
def exported(model_copy, tmp_path_factory) -> Path:
    """The tiny model exported by `python -m diplostance export-onnx MODEL_DIR --int8`."""
    folder = tmp_path_factory.mktemp("onnx-exported") / "model"
    shutil.copytree(model_copy, folder)
    assert cli(["export-onnx", str(folder), "--int8"]) == 0
    return folder


def test_export_onnx_command_writes_the_files_and_their_description(exported, model_copy):
    description = json.loads((exported / ONNX_CONFIG).read_text())
    assert description["files"] == {"fp32": ONNX_FILES["fp32"], "int8": ONNX_FILES["int8"]}
    assert all((exported / name).is_file() for name in description["files"].values())
    assert description["source_weights_sha256"] == weights_hash(model_copy)
    assert description["opset"] >= 17 and description["dynamic_axes"] == ["batch", "sequence"]
    # eager attention exports the pattern ORT's transformer optimizer fuses (1 encoder layer here)
    fused = description["fused_operators"]
    assert fused["Attention"] == 1 and fused["SkipLayerNormalization"] == 2
    assert description["int8"]["scheme"] == int8_scheme_for(cpu_extensions())


def test_folder_with_onnx_files_still_loads_with_stock_from_pretrained(exported):
    check_model_folder(exported)
    model = AutoModelForSequenceClassification.from_pretrained(exported)
    assert model.config.num_labels == 9


def test_onnx_fp32_matches_torch_over_batch_and_sequence_shapes(exported):
    texts = corpus_texts(40)
    torch_probs = load_predictor(exported, precision="fp32", batch_size=7).predict_proba(texts)
    onnx_probs = load_predictor(exported, backend="onnx", precision="fp32", batch_size=7).predict_proba(texts)
    assert onnx_probs.shape == torch_probs.shape
    np.testing.assert_allclose(onnx_probs, torch_probs, atol=1e-4)


def test_onnx_int8_agrees_with_fp32(exported):
    texts = corpus_texts(120)
    fp32 = OnnxPredictor(exported, "fp32").predict_proba(texts).argmax(-1)
    int8 = OnnxPredictor(exported, "int8").predict_proba(texts).argmax(-1)
    assert (int8 == fp32).mean() >= 0.95


def test_first_use_exports_into_a_cache_keyed_by_the_weights(model_copy, tmp_path):
    predictor = load_predictor(model_copy, backend="onnx", precision="int8", cache_dir=tmp_path)
    cached = tmp_path / weights_hash(model_copy)
    assert predictor.onnx_path == cached / ONNX_FILES["int8"]
    assert not (model_copy / ONNX_CONFIG).exists()  # the model folder is left as it was
    assert usable_export(cached, weights_hash(model_copy), "int8") == predictor.onnx_path
    assert usable_export(cached, "0" * 64, "int8") is None  # other weights: exported again


def test_onnx_refuses_bf16_and_unknown_backends(exported):
    with pytest.raises(UserError, match="precision=bf16 is not available with backend=onnx"):
        load_predictor(exported, backend="onnx", precision="bf16")
    with pytest.raises(UserError, match="backend must be one of"):
        load_predictor(exported, backend="tensorrt")


def test_export_onnx_command_reports_a_tfidf_folder_in_one_line(tfidf_model_dir, capsys):
    with pytest.raises(SystemExit) as stop:
        cli(["export-onnx", str(tfidf_model_dir)])
    assert stop.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {tfidf_model_dir}: ONNX export is for transformer model folders (config.json); "
        "tfidf and ensemble models need none"
    ]


def test_int8_scheme_follows_the_cpu(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16\n")
    assert cpu_extensions(cpuinfo) == ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
    assert int8_scheme_for(cpu_extensions(cpuinfo)) == "u8s8"
    assert int8_scheme_for(("avx2",)) == "u8s8_reduce_range"  # u8s8 on AVX2 alone can saturate


def run_script(script: str, *args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "scripts" / script), *args]
    environ = {**os.environ, **(env or {})}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S, env=environ)


def test_label_py_backend_onnx_exports_on_first_use_and_matches_torch(model_copy, tmp_path):
    out = tmp_path / "labelled.jsonl"
    cache = tmp_path / "cache"
    overrides = [f"model_dir={model_copy}", f"inputs=[{ROOT / 'seeds'}]", f"output={out}", "backend=onnx"]
    overrides += ["progress_bar=false", f"hydra.run.dir={tmp_path / 'hydra'}"]
    done = run_script("label.py", *overrides, cwd=tmp_path, env={"DIPLOSTANCE_ONNX_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (cache / weights_hash(model_copy) / ONNX_FILES["fp32"]).is_file()
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    predictor = load_predictor(model_copy)
    expected = predictor.predict_proba([r["text"] for r in records]).argmax(-1)
    got = [[predictor.labels.polarities.index(r["stances"][t]) for t in predictor.labels.targets] for r in records]
    assert (np.array(got) == expected).all()


def test_evaluate_py_backend_onnx_gives_the_training_run_metrics(tiny_run, exported, tmp_path):
    done = run_script(
        "evaluate.py",
        f"model_dir={exported}",
        "backend=onnx",
        "bootstrap_resamples=0",
        f"data.directory={ROOT / 'annotations'}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    trained = json.loads((tiny_run / "metrics.json").read_text())
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["macro_f_avg"] == trained["macro_f_avg"]
    assert {t: m["f_avg"] for t, m in evaluated["targets"].items()} == {
        t: m["f_avg"] for t, m in trained["targets"].items()
    }
