"""train.py / evaluate.py end to end, the run outputs, resume, determinism and config errors."""

import json
import subprocess
import sys

import pytest

from diplostance.reports import sweep_table
from diplostance.training import ConfigError, train
from tests.conftest import FAST_TINY, FIXTURES, ROOT, SAFETY_TIMEOUT_S, approx_floats, train_config

DATA = FIXTURES / "data"
FILE_DATA = [
    "data=file",
    f"data.train={DATA / 'long_train.csv'}",
    f"data.dev={DATA / 'long_test.csv'}",
    f"data.test={DATA / 'long_test.csv'}",
    "data.columns.id=id",
]


def run_script(script: str, *args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT_S,
    )


@pytest.mark.slow
def test_train_then_evaluate_scripts_on_a_small_csv(tmp_path):
    """The user's path: scripts, Hydra overrides, a run folder, then evaluate the saved model."""
    run_dir = tmp_path / "run"
    trained = run_script("train.py", *FAST_TINY, *FILE_DATA, "compare_baseline=true", f"hydra.run.dir={run_dir}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "| **overall** | macro_f_avg" in trained.stdout
    for name in (
        "metrics.json",
        "report.md",
        "predictions.jsonl",
        "confusion_treaty.png",
        "confusion_governance.png",
        "model/config.json",
        "model/text_processing.json",
        "model/README.md",
        "baseline/model/tfidf.safetensors",
    ):
        assert (run_dir / name).is_file(), name
    assert "tfidf baseline (all)" in (run_dir / "report.md").read_text()

    eval_dir = tmp_path / "eval"
    evaluated = run_script(
        "evaluate.py",
        f"model_dir={run_dir / 'model'}",
        "data=file",
        f"data.test={DATA / 'long_test.csv'}",
        "data.columns.id=id",
        "bootstrap_resamples=50",
        f"hydra.run.dir={eval_dir}",
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    trained_metrics = json.loads((run_dir / "metrics.json").read_text())
    evaluated_metrics = json.loads((eval_dir / "metrics.json").read_text())
    # run/model is the main model: its figures are under `model` (the top level is the headline ensemble's)
    assert evaluated_metrics["macro_f_avg"] == trained_metrics["model"]["macro_f_avg"]
    assert "bootstrap" in evaluated_metrics


def test_metrics_json_layout(tiny_run):
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert {"macro_f_avg", "macro_f1", "targets", "seed_slice", "training", "config"} <= set(metrics)
    un_treaty = metrics["targets"]["un_treaty"]
    assert {"f_avg", "macro_f1", "labels"} <= set(un_treaty)
    assert set(un_treaty["labels"]["favor"]) == {"precision", "recall", "f1", "support"}
    assert metrics["seed_slice"]["num_examples"] == 49


def test_model_folder_is_a_stock_save_pretrained_folder_without_pickles(tiny_run):
    model_dir = tiny_run / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["id2label"]["0"] == "un_treaty=favor"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "tokenizer.json").is_file()
    assert not [p for p in model_dir.iterdir() if p.suffix in {".bin", ".pt", ".pth", ".pkl", ".pickle"}]
    assert "## Test metrics" in (model_dir / "README.md").read_text()


def test_predictions_hold_every_target_with_probabilities(tiny_run):
    record = json.loads((tiny_run / "predictions.jsonl").read_text().splitlines()[0])
    assert set(record["stances"]) == {"un_treaty", "multistakeholder", "bilateral_cbm"}
    probs = record["stances"]["un_treaty"]["probs"]
    assert set(probs) == {"favor", "against", "none"} and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)


def test_tfidf_run_has_the_same_outputs_and_no_pickle(tfidf_run):
    model_dir = tfidf_run / "model"
    assert {p.name for p in model_dir.iterdir()} == {
        "tfidf.safetensors",
        "tfidf_config.json",
        "vocabulary.json",
        "text_processing.json",
        "README.md",
        "holders.json",  # the stance-holder model (holders=rules) and its actor inventory
        "holder_actors.yaml",
    }
    metrics = json.loads((tfidf_run / "metrics.json").read_text())
    assert metrics["macro_f_avg"] > 0.3  # a real classifier, far above chance on the shipped test split
    assert (tfidf_run / "predictions.jsonl").is_file() and (tfidf_run / "confusion_un_treaty.png").is_file()


def test_length_grouped_batches_waste_less_padding_than_random_ones(tmp_path):
    grouped = train(train_config(*FAST_TINY, "training.epochs=1"), tmp_path / "grouped")
    shuffled = train(
        train_config(*FAST_TINY, "training.epochs=1", "training.group_by_length=false"), tmp_path / "random"
    )
    assert grouped["training"]["padding_share"] < shuffled["training"]["padding_share"] / 2


@pytest.mark.slow
def test_training_is_deterministic(tmp_path):
    first = train(train_config(*FAST_TINY), tmp_path / "a")
    second = train(train_config(*FAST_TINY), tmp_path / "b")
    assert first["targets"] == second["targets"]
    predictions = [[json.loads(line) for line in (tmp_path / run / "predictions.jsonl").open()] for run in "ab"]
    assert predictions[0] == approx_floats(predictions[1])  # stances exactly, probabilities within PROB_TOL


@pytest.mark.slow
def test_resume_continues_from_the_last_checkpoint(tmp_path):
    train(train_config(*FAST_TINY, "training.epochs=1", "training.early_stopping_patience=9"), tmp_path)
    resumed = train(
        train_config(*FAST_TINY, "training.epochs=2", "training.resume=true", "training.early_stopping_patience=9"),
        tmp_path,
    )
    assert resumed["training"]["epochs_run"] == 2
    assert resumed["training"]["train_seconds"] < 60


def test_resume_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no checkpoint in"):
        train(train_config(*FAST_TINY, "training.resume=true"), tmp_path)


def test_unknown_model_kind_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.kind must be"):
        train(train_config(*FAST_TINY, "model.kind=giant"), tmp_path)


def test_unknown_config_option_is_refused_by_hydra(tmp_path):
    result = run_script("train.py", "model=gpt9", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "Could not find 'model/gpt9'" in result.stderr and "tiny" in result.stderr


@pytest.mark.slow
def test_sweep_table_compares_runs(tmp_path):
    for name, lr in (("0", "1e-3"), ("1", "5e-3")):
        train(train_config(*FAST_TINY, f"training.learning_rate={lr}"), tmp_path / name)
    table = sweep_table(tmp_path).splitlines()
    assert table[0].startswith("| run | overrides | macro_f_avg")
    assert len(table) == 4


@pytest.mark.parametrize("hub_config", ["arabert", "camelbert_msa", "marbert", "xlmr"])
def test_hub_model_configs_train_from_a_local_folder(tiny_model_dir, tmp_path, hub_config):
    """The real-model path (kind=pretrained, from_pretrained) end to end, on a folder saved here."""
    fast = [o for o in FAST_TINY if not o.startswith("model.")]  # the tiny-only architecture keys
    metrics = train(
        train_config(
            *fast,
            f"model={hub_config}",
            f"model.name_or_path={tiny_model_dir}",
            "training.epochs=1",
            "training.learning_rate=1e-3",
        ),
        tmp_path,
    )
    assert metrics["config"]["model"]["kind"] == "pretrained"
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert json.loads((tmp_path / "model" / "config.json").read_text())["id2label"]["8"] == "bilateral_cbm=none"


def test_an_example_experiment_composes_on_top_of_the_defaults():
    cfg = train_config("experiment=arabert_lr_sweep")
    assert cfg.model.name == "arabert" and cfg.training.learning_rate == 3.0e-5
    assert cfg.text_processing.fold_alef is True


def test_cfg_job_prints_the_composed_config():
    result = run_script("train.py", "--cfg", "job", "model=tfidf")
    assert result.returncode == 0 and "kind: tfidf" in result.stdout and "text_processing:" in result.stdout


def test_a_hub_model_that_is_not_available_offline_stops_with_a_message_not_a_traceback(tmp_path):
    result = run_script("train.py", "model=arabert", f"hydra.run.dir={tmp_path}")
    assert result.returncode != 0
    assert "not available offline" in result.stderr and "model=tiny" in result.stderr
    assert "Traceback" not in result.stderr
