"""An evaluation whose test set cannot be scored: undefined figures are null and 'undefined', never 0.000;
a test set with every label empty is a one-line error (exit 1)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from diplostance.errors import reported_as_user_errors
from diplostance.evaluation import prediction_records, score_dataset
from diplostance.reports import write_report
from diplostance.schema import IGNORE_INDEX, LabelSpace

LABELS = LabelSpace(("un_treaty", "multistakeholder"), ("favor", "against", "none"))


def probs_for(n: int) -> np.ndarray:
    probs = np.full((n, 2, 3), 0.1)
    probs[:, :, 0] = 0.8  # the model says favor everywhere
    return probs


def test_a_test_set_with_only_none_labels_has_an_undefined_macro_f_avg_in_metrics_and_report(tmp_path):
    refs = np.full((4, 2), 2)  # gold: none, for both targets
    metrics = score_dataset(probs_for(4), refs, ["annotated"] * 4, LABELS, n_resamples=20)
    assert metrics["macro_f_avg"] is None and metrics["targets"]["un_treaty"]["f_avg"] is None
    assert json.loads(json.dumps(metrics))["macro_f_avg"] is None  # null in metrics.json
    dataset = [{"id": f"s{i}", "doc_id": "d", "source": "annotated", "text": "نص."} for i in range(4)]
    records = list(prediction_records(dataset, probs_for(4), refs, LABELS))
    write_report(tmp_path / "report.md", "t", metrics, records, ["a.png", "b.png"], LABELS.polarities)
    report = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "macro_f_avg undefined" in report and "0.000 | –" not in report


def test_a_test_set_whose_every_label_is_empty_is_a_one_line_error(capsys):
    refs = np.full((3, 2), IGNORE_INDEX)
    with pytest.raises(SystemExit) as stop, reported_as_user_errors():
        score_dataset(probs_for(3), refs, ["external"] * 3, LABELS, n_resamples=0)
    err = capsys.readouterr().err
    assert stop.value.code == 1 and err.startswith("error: ") and "every label is empty" in err
    assert err.count("\n") == 1
