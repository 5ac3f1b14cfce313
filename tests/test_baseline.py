"""The tfidf baseline: fits, saves without pickle, reloads to the same predictions."""

import numpy as np
import pytest

from diplostance.baseline import TfidfStanceModel
from diplostance.schema import IGNORE_INDEX, LabelSpace

LABELS = LabelSpace(("treaty", "bilateral"), ("favor", "against", "none"))
OPTIONS = {
    "analyzer": "char_wb",
    "ngram_range": [2, 4],
    "min_df": 1,
    "max_features": None,
    "sublinear_tf": True,
    "C": 4.0,
    "max_iter": 500,
    "class_weight": True,
}
TEXTS = [
    "ندعم اتفاقية أممية ملزمة",
    "نرفض معاهدة جديدة",
    "عقد الاجتماع في جنيف",
    "نؤيد الحوار الثنائي مع موسكو",
    "علقت واشنطن الحوار الثنائي",
    "افتتحت الدورة اليوم",
]
ROWS = [[0, 2], [1, 2], [2, 2], [2, 0], [2, 1], [2, IGNORE_INDEX]]


@pytest.fixture
def model():
    return TfidfStanceModel.fit(TEXTS, ROWS, LABELS, OPTIONS)


def test_predictions_are_distributions_over_polarities(model):
    probs = model.predict_proba(TEXTS)
    assert probs.shape == (6, 2, 3)
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_save_and_load_round_trip_predicts_identically(model, tmp_path):
    model.save(tmp_path)
    reloaded = TfidfStanceModel.load(tmp_path)
    assert np.allclose(model.predict_proba(TEXTS), reloaded.predict_proba(TEXTS), atol=1e-6)
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.bin"))


def test_a_target_seen_with_one_polarity_predicts_it_with_certainty():
    model = TfidfStanceModel.fit(TEXTS[:3], [[2, 2], [2, 2], [2, 2]], LABELS, OPTIONS)
    assert np.allclose(model.predict_proba(["أي نص"])[0, :, 2], 1.0)
