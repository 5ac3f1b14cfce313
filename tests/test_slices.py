"""Per-slice metrics and a report that leads with real text."""

import numpy as np

from diplostance.evaluation import score_dataset
from diplostance.reports import write_report
from diplostance.schema import LabelSpace

LABELS = LabelSpace(("treaty",), ("favor", "against", "none"))
PROBS = np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 2, 1]][:, None, :]
REFS = np.array([[0], [1], [2], [2], [2], [1]])


def test_each_slice_is_scored_apart_with_its_size():
    metrics = score_dataset(PROBS, REFS, ["seed", "seed", "news", "news", "composed", "composed"], LABELS, 0)
    assert list(metrics["slices"]) == ["seed", "news", "composed"]  # real text first
    assert metrics["slices"]["news"]["sentences"] == 2
    assert metrics["slices"]["seed"]["macro_f_avg"] == 1.0
    assert metrics["seed_slice"]["macro_f_avg"] == 1.0


def report_text(tmp_path, sources):
    metrics = score_dataset(PROBS, REFS, sources, LABELS, 0)
    metrics["num_examples"] = len(sources)
    write_report(tmp_path / "report.md", "t", metrics, [], ["confusion_treaty.png"], LABELS.polarities)
    return (tmp_path / "report.md").read_text(encoding="utf-8")


def test_a_report_on_composed_text_only_warns(tmp_path):
    assert "**Warning:** the test data has no real text" in report_text(tmp_path, ["composed"] * 6)


def test_a_report_with_real_text_leads_with_it_and_does_not_warn(tmp_path):
    text = report_text(tmp_path, ["seed"] * 3 + ["composed"] * 3)
    assert "Warning" not in text
    assert text.index("this model (seed slice)") < text.index("this model (all)")
