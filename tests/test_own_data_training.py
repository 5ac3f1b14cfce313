"""Issue 19, points 3 and 5: a safe default for the thread count, and tf-idf refit on train+dev."""

import json

import pytest
import torch

from diplostance.training import ConfigError, resolve_num_threads, train
from tests.conftest import FIXTURES, compose_config

OWN = FIXTURES / "own_data"
MAWQIF_LIKE = [f"data.train={OWN / 'mawqif_like_Train.csv'}", f"data.test={OWN / 'mawqif_like_Test.csv'}"]


def test_an_explicit_thread_count_is_used_as_given():
    assert resolve_num_threads(3) == 3


def test_the_default_thread_count_follows_omp_num_threads_when_set(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert resolve_num_threads(None) == 1


def test_the_default_thread_count_stays_within_the_free_cores_and_four(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    threads = resolve_num_threads(None)
    assert 1 <= threads <= min(4, len(__import__("os").sched_getaffinity(0)))


def test_training_applies_and_records_the_thread_count(tmp_path):
    before = torch.get_num_threads()
    try:
        cfg = compose_config(
            "train", ["model=tfidf", "data=file", "bootstrap_resamples=0", "training.num_threads=1", *MAWQIF_LIKE]
        )
        metrics = train(cfg, tmp_path)
        assert torch.get_num_threads() == 1
        assert metrics["training"]["num_threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_refit_on_train_dev_folds_the_held_out_dev_share_into_the_tfidf_model(tmp_path):
    cfg = compose_config(
        "train", ["model=tfidf", "data=file", "bootstrap_resamples=0", "data.refit_on_train_dev=true", *MAWQIF_LIKE]
    )
    metrics = train(cfg, tmp_path)
    assert metrics["training"]["refit_on_train_dev"] == {"train_sentences": 43, "dev_sentences": 5}
    saved = json.loads((tmp_path / "model" / "tfidf_config.json").read_text(encoding="utf-8"))
    assert saved["options"]["refit_on_train_dev"]["dev_sentences"] == 5
    assert set(saved["options"]["selection"]) == {"Women empowerment", "Covid Vaccine"}  # chosen on dev first


@pytest.mark.parametrize("model", ["tiny", "embedding"])
def test_refit_with_an_ensemble_is_refused_before_any_training(tmp_path, model):
    cfg = compose_config("train", [f"model={model}", "data=file", "data.refit_on_train_dev=true", *MAWQIF_LIKE])
    with pytest.raises(ConfigError, match="add ensemble=false"):
        train(cfg, tmp_path)
    assert not (tmp_path / "model").exists()
