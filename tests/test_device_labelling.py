"""The labeller's GPU feeding: articles prepared in worker processes and written on a writer thread give
byte-for-byte the outputs of the one-process path."""

from __future__ import annotations

import pytest

from diplostance.labelling import label, local
from diplostance.labelling.inputs import Article, InputError
from diplostance.labelling.options import LabellingError, LabelOptions
from diplostance.predictors.transformer import TransformerPredictor
from diplostance.text import split_sentences
from tests.conftest import ROOT
from tests.test_device_predictor import build_model_folder


def _outputs(out):
    return [p.read_bytes() for p in (out, out.with_name("OUT.docs.jsonl"), out.with_name("OUT.errors.jsonl"))]


@pytest.mark.parametrize("window", [7, 512])
def test_prepared_in_worker_processes_the_outputs_are_those_of_one_process(small_tfidf_model_dir, tmp_path, window):
    inputs = [str(ROOT / "seeds"), str(ROOT / "tests" / "fixtures")]
    runs = {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}" / "OUT.jsonl"
        out.parent.mkdir()
        cfg = {"model_dir": str(small_tfidf_model_dir), "inputs": inputs, "output": str(out)}
        cfg |= {"prepare_workers": workers, "window_sentences": window, "allow_errors": True, "progress_bar": False}
        summary = label(cfg)
        runs[workers] = (_outputs(out), summary.counts)
    assert runs[0] == runs[2] and runs[0][1].sentences > 0


@pytest.fixture(scope="module")
def transformer_dir(tmp_path_factory):
    texts = [s.text for p in sorted((ROOT / "seeds").glob("*.txt")) for s in split_sentences(p.read_text("utf-8"))]
    return build_model_folder(tmp_path_factory.mktemp("tiny-transformer"), texts[:200])


class Recording(TransformerPredictor):
    """The real predictor, noting which entry point the labeller called."""

    calls: list[str]

    def predict_proba(self, texts):
        self.calls.append("predict_proba")
        return super().predict_proba(texts)

    def predict_encoded(self, ids):
        self.calls.append("predict_encoded")
        return super().predict_encoded(ids)


def test_workers_tokenise_for_a_transformer_and_the_outputs_are_those_of_one_process(transformer_dir, tmp_path):
    inputs = [str(ROOT / "seeds"), str(ROOT / "tests" / "fixtures")]
    runs, calls = {}, {}
    for workers in (0, 2):
        out = tmp_path / f"w{workers}" / "OUT.jsonl"
        out.parent.mkdir()
        predictor = Recording(transformer_dir, batch_size=8, device="cpu")
        predictor.calls = []
        cfg = {"model_dir": str(transformer_dir), "inputs": inputs, "output": str(out), "device": "cpu"}
        cfg |= {"prepare_workers": workers, "window_sentences": 64, "allow_errors": True, "progress_bar": False}
        summary = label(cfg, predictor=predictor)
        runs[workers], calls[workers] = (_outputs(out), summary.counts), set(predictor.calls)
    assert runs[0] == runs[2] and runs[0][1].sentences > 0
    assert "predict_proba" in calls[0] and calls[2] == {"predict_encoded"}  # workers 2: no text reached it


def test_a_chunk_is_tokenised_as_encode_tokenises_its_sentences(transformer_dir):
    predictor = TransformerPredictor(transformer_dir, device="cpu")
    articles = [Article("d1", "قال الوزير. رفضت الدولة المعاهدة!", "x"), Article("d2", "", "x")]
    chunk = [((0, 0), articles[0]), ((0, 1), InputError("x", 2, "bad")), ((0, 2), articles[1])]
    local._ENCODE = predictor.encode
    try:
        prepared = local._prepare_chunk(chunk)
    finally:
        local._ENCODE = None
    assert [p[0] for p in prepared] == [(0, 0), (0, 1), (0, 2)] and prepared[1][1] == chunk[1][1]
    sentences = [s.text for s in prepared[0][1][1]]
    assert prepared[0][2] == dict(zip(sentences, predictor.encode(sentences), strict=True))
    assert prepared[1][2] is None and prepared[2][2] == {}  # an error has no ids; an empty article, none to give


def test_a_negative_number_of_workers_is_refused():
    with pytest.raises(LabellingError, match="prepare_workers"):
        LabelOptions.from_config({"model_dir": "m", "inputs": ["x"], "output": "OUT.jsonl", "prepare_workers": -1})
