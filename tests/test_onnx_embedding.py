"""The embedding kind's encoder on ONNX Runtime: export, fp32 against torch, int8, the cascade, the one-line report."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

import diplostance.embedding as embedding
import diplostance.predictors as predictors
from diplostance.errors import UserError
from diplostance.labelling.model import load_labelling_predictor
from diplostance.labelling.options import LabelOptions
from diplostance.predictors import check_options, load_predictor
from diplostance.predictors.onnx import (
    CHECK_TOLERANCE,
    ENCODER_FILES,
    CascadePredictor,
    EmbeddingOnnxPredictor,
    choose_margin,
    encoder_export_problem,
    file_hash,
    find_or_export_encoder,
    model_fingerprint,
    quantised_ops,
    read_onnx_config,
    weights_hash,
)
from diplostance.predictors.tfidf import TfidfPredictor
from tests.conftest import FIXTURES, PROB_TOL, ROOT, compose_config

DATA = FIXTURES / "data"
SMALL_DATA = [
    "data=file",
    f"data.train={DATA / 'long_train.csv'}",
    f"data.dev={DATA / 'long_test.csv'}",
    f"data.test={DATA / 'long_test.csv'}",
    "data.columns.id=id",
    "bootstrap_resamples=0",
]


def corpus_texts(n: int) -> list[str]:
    """Composed sentences of the corpus, short and long, so that batches pad to many widths."""
    lines = (ROOT / "annotations" / "corpus" / "batch_01.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["text"] for line in lines[:n]]


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    """This module's own export cache (DIPLOSTANCE_ONNX_CACHE), so no other test's export is touched."""
    saved = os.environ.get("DIPLOSTANCE_ONNX_CACHE")
    os.environ["DIPLOSTANCE_ONNX_CACHE"] = str(tmp_path_factory.mktemp("onnx-cache"))
    yield Path(os.environ["DIPLOSTANCE_ONNX_CACHE"])
    if saved is None:
        os.environ.pop("DIPLOSTANCE_ONNX_CACHE")
    else:
        os.environ["DIPLOSTANCE_ONNX_CACHE"] = saved


@pytest.fixture(scope="module")
def small_encoder(e5_folder, tmp_path_factory) -> Path:
    """A 2-layer, 32-wide encoder with random weights and e5-small's converted tokenizer: the export's
    mechanics at a small fraction of e5-small's cost."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, BertConfig, BertModel

    e5 = AutoConfig.from_pretrained(e5_folder)
    config = BertConfig(
        vocab_size=e5.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=e5.max_position_embeddings,
        pad_token_id=e5.pad_token_id,
    )
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("small-encoder") / "encoder"
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    AutoTokenizer.from_pretrained(e5_folder).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def run(small_encoder, onnx_cache, tmp_path_factory) -> Path:
    """The default recipe (embedding classifier, tf-idf baseline, their ensemble) with the small encoder."""
    from diplostance.training import train

    run_dir = tmp_path_factory.mktemp("onnx-embedding-run")
    overrides = ["model=embedding", f"model.embedding.encoder={small_encoder}", *SMALL_DATA]
    train(compose_config("train", overrides), run_dir)
    return run_dir


def test_the_export_holds_an_fp32_graph_checked_against_torch_and_a_quantised_int8_graph(run):
    folder = find_or_export_encoder(run / "model" / "encoder", [-1])
    description = read_onnx_config(folder)
    assert description["source_weights_sha256"] == weights_hash(run / "model" / "encoder")
    assert description["check"]["fp32_max_abs_difference"] <= CHECK_TOLERANCE
    for precision, name in ENCODER_FILES.items():
        assert description["sha256"][precision] == file_hash(folder / name)
    assert quantised_ops(folder / ENCODER_FILES["int8"]) and not quantised_ops(folder / ENCODER_FILES["fp32"])


def test_onnx_fp32_gives_the_torch_probabilities_and_stances(run):
    texts = corpus_texts(40)
    on_torch = load_predictor(run / "model", precision="fp32", num_threads=1).predict_proba(texts)
    on_onnx = load_predictor(run / "model", backend="onnx", precision="fp32", num_threads=1).predict_proba(texts)
    np.testing.assert_allclose(on_onnx, on_torch, atol=PROB_TOL)
    assert (on_onnx.argmax(-1) == on_torch.argmax(-1)).all()


def test_int8_runs_the_quantised_graph_with_a_cascade_whose_margin_is_recorded(run, capsys):
    predictor = load_predictor(run / "model", backend="onnx", precision="int8", num_threads=1)
    assert isinstance(predictor, CascadePredictor)
    assert isinstance(predictor.predictor, EmbeddingOnnxPredictor)
    assert "int8" in predictor.predictor.encoders
    recorded = read_onnx_config(predictor.predictor.export_dir)["cascade"][model_fingerprint(run / "model")]
    assert recorded["margin"] == predictor.margin >= 0 and "batch_*.jsonl" in recorded["chosen_on"]
    capsys.readouterr()
    load_predictor(run / "model", backend="onnx", precision="int8", num_threads=1)
    assert "choosing the margin" not in capsys.readouterr().err  # chosen once per model


def test_the_cascade_runs_again_in_fp32_exactly_the_sentences_within_its_margin(run):
    texts = corpus_texts(40)
    inner = load_predictor(run / "model", backend="onnx", precision="int8", num_threads=1).predictor
    fast, exact = inner.predict_proba(texts), inner.exact_proba(texts)
    assert (CascadePredictor(inner, {"margin": 0.0}).predict_proba(texts) == fast).all()
    everything = CascadePredictor(inner, {"margin": 1.01})  # every gap is below 1.01: all in fp32
    assert (everything.predict_proba(texts).argmax(-1) == exact.argmax(-1)).all()
    assert everything.run_again == everything.sentences == len(texts)


def test_the_margin_is_wide_enough_for_every_stance_int8_changed_on_the_calibration_sentences():
    exact = np.array([[[0.50, 0.30, 0.20]], [[0.20, 0.70, 0.10]], [[0.34, 0.33, 0.33]]])
    fast = np.array([[[0.45, 0.47, 0.08]], [[0.20, 0.70, 0.10]], [[0.33, 0.34, 0.33]]])
    chosen = choose_margin(fast, exact)
    assert chosen["sentences_changed_by_int8"] == 2
    assert chosen["margin"] > 0.02 and chosen["share_run_again_in_fp32"] == pytest.approx(2 / 3, abs=1e-3)
    assert choose_margin(exact, exact)["margin"] == 0.0


def test_a_damaged_export_is_exported_again(run, tmp_path, capsys):
    encoder_dir = run / "model" / "encoder"
    folder = find_or_export_encoder(encoder_dir, [-1], cache_dir=tmp_path)
    with (folder / ENCODER_FILES["int8"]).open("ab") as handle:
        handle.write(b"\0" * 16)
    assert "SHA-256 differs" in encoder_export_problem(folder, weights_hash(encoder_dir), [-1])
    assert find_or_export_encoder(encoder_dir, [-1], cache_dir=tmp_path) == folder
    assert "exporting the encoder again" in capsys.readouterr().err
    assert encoder_export_problem(folder, weights_hash(encoder_dir), [-1]) is None


def test_the_ensemble_names_what_each_member_runs_on_in_one_line(run, capsys):
    ensemble = run / "ensemble" / "model"
    load_predictor(ensemble, backend="onnx", precision="int8", num_threads=1)  # the margin, chosen once
    capsys.readouterr()
    predictor = load_predictor(ensemble, backend="onnx", precision="int8", num_threads=1, announce=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert "embedding: ONNX Runtime int8" in lines[0] and "tfidf: numpy" in lines[0]
    assert "run again in fp32" in lines[0] and "1 thread(s)" in lines[0]
    assert [type(m) for m in predictor.members] == [EmbeddingOnnxPredictor, TfidfPredictor]
    load_predictor(ensemble, precision="int8", num_threads=1, announce=True)  # torch.ao int8, asked for by name
    assert "embedding: torch int8 on cpu (torch.ao dynamic quantisation, legacy)" in capsys.readouterr().err


def test_a_member_without_the_backend_asked_is_refused_not_run_on_torch(run, monkeypatch):
    monkeypatch.delitem(predictors.BACKEND_MODULES, ("embedding", "onnx"))
    ensemble = run / "ensemble" / "model"
    with pytest.raises(UserError, match="the embedding kind has no backend=onnx"):
        check_options(ensemble, "onnx", precision="int8")
    with pytest.raises(UserError, match="the embedding kind has no backend=onnx"):
        load_predictor(ensemble, backend="onnx", precision="int8")


def test_labelling_takes_the_load_aware_thread_count_and_names_the_backends(run, monkeypatch, tmp_path, capsys):
    import diplostance.labelling.model as labelling_model

    monkeypatch.setattr(labelling_model, "load_aware_threads", lambda: 1)
    monkeypatch.setattr(embedding, "_SHOW_PROGRESS", True)
    options = LabelOptions.from_config(
        {
            "model_dir": str(run / "ensemble" / "model"),
            "inputs": [str(tmp_path)],
            "output": str(tmp_path / "out.jsonl"),
            "backend": "onnx",
            "precision": "fp32",
        }
    )
    predictor = load_labelling_predictor(options, "ensemble")
    assert predictor.members[0].num_threads == 1
    assert "embedding: ONNX Runtime fp32; tfidf: numpy" in capsys.readouterr().err
    assert embedding._SHOW_PROGRESS is False  # label.py's own bar counts the sentences


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_encoding_shows_progress_on_a_terminal_and_stays_quiet_elsewhere(run, monkeypatch):
    monkeypatch.setattr(embedding, "_SHOW_PROGRESS", True)
    encoder = load_predictor(run / "model", backend="onnx", precision="fp32", batch_size=4).encoder
    for stream, shown in ((Terminal(), True), (io.StringIO(), False)):
        monkeypatch.setattr("sys.stderr", stream)
        encoder.encode(corpus_texts(12))
        assert ("sentence" in stream.getvalue()) is shown
