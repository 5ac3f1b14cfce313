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


WORD_AND_CHAR = {
    "features": [
        {"analyzer": "char_wb", "ngram_range": [2, 4], "min_df": 1},
        {"analyzer": "word", "ngram_range": [1, 2], "min_df": 1},
    ],
    "sublinear_tf": True,
    "C": 4.0,
    "C_grid": [0.5, 4.0],
    "none_offset_grid": [0.0, 1.0],
    "max_iter": 500,
    "class_weight": True,
}


def test_word_and_character_blocks_are_both_features():
    model = TfidfStanceModel.fit(TEXTS, ROWS, LABELS, WORD_AND_CHAR)
    char_block, word_block = model.vectorizers
    assert "الحوار" in word_block.vocabulary_  # a whole word
    assert all(len(term) <= 4 for term in char_block.vocabulary_)
    assert model.features(TEXTS).shape[1] == len(char_block.vocabulary_) + len(word_block.vocabulary_)


def test_c_and_none_offset_are_chosen_on_dev_and_recorded():
    model = TfidfStanceModel.fit(TEXTS, ROWS, LABELS, WORD_AND_CHAR, dev_texts=TEXTS[:4], dev_rows=ROWS[:4])
    selection = model.options["selection"]["treaty"]
    assert selection["C"] in (0.5, 4.0)
    assert set(selection["dev_f_avg_by_C"]) == {0.5, 4.0}
    assert selection["none_offset"] in (0.0, 1.0)


def test_a_none_offset_moves_probability_from_none_to_the_stances(tmp_path):
    model = TfidfStanceModel.fit(TEXTS, ROWS, LABELS, WORD_AND_CHAR)
    before = model.predict_proba(TEXTS)
    model.weights["none_offset"] = np.array([1.0, 0.0], dtype=np.float32)
    after = model.predict_proba(TEXTS)
    assert (after[:, 0, 2] < before[:, 0, 2]).all()
    assert np.allclose(after[:, 1], before[:, 1])
    model.save(tmp_path)
    assert np.allclose(TfidfStanceModel.load(tmp_path).predict_proba(TEXTS), after, atol=1e-6)


def test_a_folder_saved_with_one_analyzer_still_loads(model, tmp_path):
    """Folders written before feature blocks: one vocabulary object and an `idf` tensor."""
    import json

    from safetensors.numpy import load_file, save_file

    model.save(tmp_path)
    tensors = load_file(str(tmp_path / "tfidf.safetensors"))
    tensors["idf"] = tensors.pop("idf.0")
    tensors.pop("none_offset", None)
    save_file(tensors, str(tmp_path / "tfidf.safetensors"))
    vocabularies = json.loads((tmp_path / "vocabulary.json").read_text(encoding="utf-8"))
    (tmp_path / "vocabulary.json").write_text(json.dumps(vocabularies[0], ensure_ascii=False), encoding="utf-8")
    assert np.allclose(TfidfStanceModel.load(tmp_path).predict_proba(TEXTS), model.predict_proba(TEXTS), atol=1e-6)


def test_one_weight_per_feature_block_or_a_clear_error():
    from diplostance.errors import UserError

    with pytest.raises(UserError, match=r"one weight per entry of tfidf\.features"):
        TfidfStanceModel.fit(TEXTS, ROWS, LABELS, {**WORD_AND_CHAR, "block_weights": [1.0]})


def test_each_target_and_grid_point_is_logged_as_it_is_fitted(caplog):
    """Issue 19: a many-target fit printed nothing for 25 minutes; now one line per target and C, one per choice."""
    with caplog.at_level("INFO", logger="diplostance.baseline"):
        TfidfStanceModel.fit(TEXTS, ROWS, LABELS, WORD_AND_CHAR, dev_texts=TEXTS[:4], dev_rows=ROWS[:4])
    lines = [r.getMessage() for r in caplog.records]
    grid_points = [line for line in lines if "dev f_avg" in line and "iterations" in line]
    assert len(grid_points) == len(LABELS.targets) * len(WORD_AND_CHAR["C_grid"])
    assert any(line.startswith("tfidf: target 1/2 'treaty'") for line in grid_points)
    assert sum("chosen on dev" in line and "C=" in line for line in lines) == len(LABELS.targets)
    assert sum("none offset" in line for line in lines) == len(LABELS.targets)


def test_targets_fitted_in_parallel_workers_give_the_same_model():
    options = {**WORD_AND_CHAR, "warm_start": False}
    alone = TfidfStanceModel.fit(TEXTS, ROWS, LABELS, {**options, "n_jobs": 1}, TEXTS[:4], ROWS[:4])
    parallel = TfidfStanceModel.fit(TEXTS, ROWS, LABELS, {**options, "n_jobs": 2}, TEXTS[:4], ROWS[:4])
    assert parallel.options["selection"] == alone.options["selection"]
    assert np.allclose(parallel.predict_proba(TEXTS), alone.predict_proba(TEXTS), atol=1e-6)


def test_a_cold_grid_fits_each_c_as_a_fresh_logistic_regression():
    """warm_start=false reproduces the independent fits of earlier versions exactly (same C, same weights)."""
    from sklearn.linear_model import LogisticRegression

    model = TfidfStanceModel.fit(TEXTS, ROWS, LABELS, {**WORD_AND_CHAR, "warm_start": False}, TEXTS[:4], ROWS[:4])
    c = model.options["selection"]["treaty"]["C"]
    fresh = LogisticRegression(C=c, max_iter=500, class_weight="balanced").fit(
        model.features(TEXTS), [0, 1, 2, 2, 2, 2]
    )
    assert np.allclose(model.weights["treaty.coef"], fresh.coef_, atol=1e-6)


def test_refit_on_train_dev_learns_the_dev_text_and_keeps_the_choices_made_on_dev():
    dev_texts, dev_rows = ["نؤيد ميثاقا رقميا أمميا", "نرفض الميثاق الرقمي"], [[0, 2], [1, 2]]
    selected = TfidfStanceModel.fit(TEXTS, ROWS, LABELS, WORD_AND_CHAR, dev_texts, dev_rows)
    refit = TfidfStanceModel.fit(TEXTS, ROWS, LABELS, WORD_AND_CHAR, dev_texts, dev_rows, refit_on_train_dev=True)
    assert "ميثاقا" in refit.vectorizers[1].vocabulary_ and "ميثاقا" not in selected.vectorizers[1].vocabulary_
    assert refit.options["selection"] == selected.options["selection"]
    assert refit.options["refit_on_train_dev"] == {"train_sentences": 6, "dev_sentences": 2}
    assert np.allclose(refit.weights["none_offset"], selected.weights["none_offset"])
