"""The embedding model kind: frozen multilingual-e5-small features + one logistic regression per target."""

import json
import shutil

import numpy as np
import pytest
from conftest import FIXTURES, compose_config

from diplostance.embedding import EmbeddingStanceModel
from diplostance.predictors import ModelFolderError, check_model_folder, load_predictor
from diplostance.schema import LabelSpace

LABELS = LabelSpace(("treaty",), ("favor", "against", "none"))
DATA = FIXTURES / "data"
SMALL_DATA = [
    "data=file",
    f"data.train={DATA / 'long_train.csv'}",
    f"data.dev={DATA / 'long_test.csv'}",
    f"data.test={DATA / 'long_test.csv'}",
    "data.columns.id=id",
    "bootstrap_resamples=0",
]


@pytest.fixture(scope="module")
def embedding_run(tmp_path_factory, e5_folder):
    """The default recipe (embedding classifier, tfidf baseline, ensemble) on the small CSV fixtures."""
    from diplostance.training import train

    run_dir = tmp_path_factory.mktemp("embedding_run")
    metrics = train(compose_config("train", ["model=embedding", *SMALL_DATA]), run_dir)
    return run_dir, metrics


def test_the_regressions_follow_the_features():
    features = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.5, 0.5], [0.45, 0.55]])
    rows = np.array([[0], [0], [1], [1], [2], [2]])
    options = {"C": 10.0, "class_weight": True, "max_iter": 1000}
    model = EmbeddingStanceModel.fit(features, rows, LABELS, options)
    assert model.predict_proba(np.array([[1.0, 0.05], [0.05, 1.0]])).argmax(-1)[:, 0].tolist() == [0, 1]


def test_an_embedding_folder_loads_like_any_model_folder(embedding_run):
    run_dir, _ = embedding_run
    kind, labels = check_model_folder(run_dir / "model")
    assert kind == "embedding" and labels.targets
    probs = load_predictor(run_dir / "model").predict_proba(["ندعم اتفاقية أممية", "عقد الاجتماع في جنيف."])
    assert probs.shape == (2, len(labels.targets), len(labels.polarities))
    assert np.allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_the_saved_encoder_keeps_only_the_scripts_of_the_training_text(embedding_run, e5_folder):
    run_dir, metrics = embedding_run
    full = json.loads((e5_folder / "config.json").read_text())["vocab_size"]
    saved = json.loads((run_dir / "model" / "encoder" / "config.json").read_text())["vocab_size"]
    assert saved == metrics["training"]["vocabulary_size"] < full


def test_the_default_recipe_leads_its_report_with_the_ensemble(embedding_run):
    run_dir, metrics = embedding_run
    assert metrics["headline"] == "ensemble"
    assert check_model_folder(run_dir / "ensemble" / "model")[0] == "ensemble"
    assert sorted(metrics["ensemble"]["choice"]["members"]) == ["embedding", "tfidf"]
    assert "Headline model: the ensemble" in (run_dir / "report.md").read_text(encoding="utf-8")


def test_an_embedding_folder_without_its_encoder_weights_is_refused(embedding_run, tmp_path):
    broken = tmp_path / "model"
    shutil.copytree(embedding_run[0] / "model", broken)
    (broken / "encoder" / "model.safetensors").unlink()
    with pytest.raises(ModelFolderError, match="encoder"):
        check_model_folder(broken)


def test_a_precision_the_encoder_cannot_run_is_refused(embedding_run):
    from diplostance.errors import UserError

    with pytest.raises(UserError, match="precision"):
        load_predictor(embedding_run[0] / "model", precision="fp16")
