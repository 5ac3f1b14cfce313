"""The ensemble model kind: weights chosen on dev, a self-contained folder, loaded like any model."""

import json

import numpy as np
import pytest

from diplostance.ensemble import ENSEMBLE_CONFIG, EnsembleFolderError, choose_ensemble, combine, save_ensemble
from diplostance.predictors import check_model_folder, load_predictor
from diplostance.schema import LabelSpace

LABELS = LabelSpace(("treaty",), ("favor", "against", "none"))


def one_hot(indices, confidence=0.8):
    return np.eye(3, dtype=np.float32)[np.asarray(indices)][:, None, :] * confidence + (1 - confidence) / 3


def test_the_member_that_is_right_on_dev_gets_the_weight():
    gold = np.array([[0], [1], [2], [0]])
    right, wrong = one_hot([0, 1, 2, 0], confidence=0.6), one_hot([2, 2, 2, 2], confidence=0.9)
    choice = choose_ensemble([right, wrong], gold, LABELS, none_offset_grid=(0.0,))
    assert choice.weights[0] > choice.weights[1]
    assert choice.dev_macro_f_avg == 1.0


def test_combine_is_the_weighted_mean():
    a, b = one_hot([0]), one_hot([1])
    assert np.allclose(combine([a, b], [3, 1]), 0.75 * a + 0.25 * b)


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory, tiny_model_dir, tfidf_model_dir):
    from diplostance.ensemble import EnsembleChoice

    out = tmp_path_factory.mktemp("ensemble") / "model"
    labels = check_model_folder(tiny_model_dir)[1]
    choice = EnsembleChoice([0.5, 0.5], [0.0, 0.5, 0.0], 0.0, {0.5: 0.0})
    save_ensemble(out, {"transformer": tiny_model_dir, "tfidf": tfidf_model_dir}, choice, labels)
    return out


def test_an_ensemble_folder_loads_like_any_model_folder(ensemble_dir, tiny_model_dir, tfidf_model_dir):
    kind, labels = check_model_folder(ensemble_dir)
    assert kind == "ensemble" and labels == check_model_folder(tiny_model_dir)[1]
    texts = ["وقعت الدولتان مذكرة تفاهم للتعاون في الأمن السيبراني.", "عقد الاجتماع في جنيف."]
    probs = load_predictor(ensemble_dir).predict_proba(texts)
    members = 0.5 * load_predictor(tiny_model_dir).predict_proba(texts)
    members += 0.5 * load_predictor(tfidf_model_dir).predict_proba(texts)
    assert probs.shape == members.shape
    assert np.allclose(probs[:, 0], members[:, 0], atol=1e-5)  # no offset on the first target
    assert (probs[:, 1, 2] < members[:, 1, 2]).all()  # the `none` offset of the second target


def test_the_ensemble_folder_is_self_contained(ensemble_dir, tmp_path):
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(ensemble_dir, moved)
    assert check_model_folder(moved)[0] == "ensemble"


def test_a_member_path_outside_the_folder_is_refused(ensemble_dir, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(ensemble_dir, broken)
    config = json.loads((broken / ENSEMBLE_CONFIG).read_text())
    config["members"][0]["path"] = "../../elsewhere"
    (broken / ENSEMBLE_CONFIG).write_text(json.dumps(config))
    with pytest.raises(EnsembleFolderError, match="leaves the ensemble folder"):
        check_model_folder(broken)


def test_training_beside_a_baseline_writes_an_evaluable_ensemble(tmp_path):
    from conftest import FAST_TINY, train_config

    from diplostance.training import train

    overrides = [o for o in FAST_TINY if o != "compare_baseline=false"]
    metrics = train(train_config(*overrides, "compare_baseline=true", "ensemble=true"), tmp_path)
    assert check_model_folder(tmp_path / "ensemble" / "model")[0] == "ensemble"
    assert (tmp_path / "ensemble" / "metrics.json").is_file()
    assert sum(metrics["ensemble"]["choice"]["weights"]) == pytest.approx(1.0)
    assert "seed" in metrics["ensemble"]["slices"]


def test_three_members_are_weighted_on_the_simplex():
    from diplostance.ensemble import weight_grid

    grid = weight_grid(3, step=0.5)
    assert sorted(grid) == sorted([(1, 0, 0), (0, 1, 0), (0, 0, 1), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)])
    gold = np.array([[0], [1], [2], [0]])
    right, wrong = one_hot([0, 1, 2, 0], confidence=0.6), one_hot([2, 2, 2, 2], confidence=0.9)
    choice = choose_ensemble([wrong, right, wrong], gold, LABELS, none_offset_grid=(0.0,))
    assert choice.weights[1] == max(choice.weights) and choice.dev_macro_f_avg == 1.0


def member_wrong_on(gold, n_wrong, confidence):
    """Right where `gold` says, except on its first n_wrong sentences, where it is confidently wrong."""
    predicted = gold[:, 0].copy()
    predicted[:n_wrong] = (predicted[:n_wrong] + 1) % 3
    probs = one_hot(predicted, confidence=0.7)
    probs[:n_wrong] = one_hot(predicted[:n_wrong], confidence=confidence)
    return probs


def test_within_dev_noise_the_most_even_mixture_is_kept():
    gold = np.random.default_rng(0).integers(0, 3, size=(60, 1))
    right, slightly_worse = one_hot(gold[:, 0], confidence=0.7), member_wrong_on(gold, 1, confidence=0.95)
    assert choose_ensemble([right, slightly_worse], gold, LABELS, none_offset_grid=(0.0,)).weights == [0.5, 0.5]
    greedy = choose_ensemble(
        [right, slightly_worse], gold, LABELS, none_offset_grid=(0.0,), prefer_even_within_noise=False
    )
    assert greedy.weights[0] > 0.5


def test_a_member_worse_beyond_dev_noise_loses_its_weight():
    gold = np.random.default_rng(0).integers(0, 3, size=(60, 1))
    right, much_worse = one_hot(gold[:, 0], confidence=0.7), member_wrong_on(gold, 25, confidence=0.95)
    assert choose_ensemble([right, much_worse], gold, LABELS, none_offset_grid=(0.0,)).weights[0] > 0.5


def test_the_realistic_slices_choose_when_dev_has_enough_of_them():
    from diplostance.ensemble import realistic_rows

    slices = ["composed"] * 5 + ["news"] * 3 + ["seed"]
    assert realistic_rows(slices, min_sentences=4).tolist() == [5, 6, 7, 8]
    assert realistic_rows(slices, min_sentences=10) is None


def test_equal_weights_are_a_prior_that_dev_does_not_move():
    from diplostance.ensemble import fixed_ensemble

    gold = np.array([[0], [1], [2], [0]])
    right, wrong = one_hot([0, 1, 2, 0], confidence=0.6), one_hot([2, 2, 2, 2], confidence=0.9)
    choice = fixed_ensemble([right, wrong], gold, LABELS, [0.5, 0.5], none_offset_grid=(0.0,))
    assert choice.weights == [0.5, 0.5]
    assert choice.grid["1/0"] == 1.0  # what dev would have chosen is still recorded


def test_an_unknown_ensemble_selection_key_stops_the_run_before_training(tmp_path):
    from conftest import train_config

    from diplostance.training import ConfigError, train

    with pytest.raises(ConfigError, match="ensemble_selection"):
        train(train_config("+ensemble_selection.wieghts=dev"), tmp_path)


def test_ensemble_weights_for_another_number_of_members_stop_the_run_before_training(tmp_path):
    from conftest import train_config

    from diplostance.errors import UserError
    from diplostance.training import train

    with pytest.raises(UserError, match="2 numbers"):
        train(train_config("ensemble_selection.weights=[0.5]"), tmp_path)
    assert not (tmp_path / "model").exists()
