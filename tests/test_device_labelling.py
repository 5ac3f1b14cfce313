"""The labeller's GPU feeding: articles prepared in worker processes and written on a writer thread give
byte-for-byte the outputs of the one-process path."""

from __future__ import annotations

import pytest

from diplostance.labelling import label
from diplostance.labelling.options import LabellingError, LabelOptions
from tests.conftest import ROOT


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


def test_a_negative_number_of_workers_is_refused():
    with pytest.raises(LabellingError, match="prepare_workers"):
        LabelOptions.from_config({"model_dir": "m", "inputs": ["x"], "output": "OUT.jsonl", "prepare_workers": -1})
