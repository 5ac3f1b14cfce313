"""Issue 25, part B: data maps that lose labels, what a new user reads on the console, and the headline model.

Each test names the issue's case it covers. Library functions are called directly where the entry point adds
nothing; the entry points run as a user runs them where the point is what the user sees (one line, no traceback).
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

from diplostance.data import DataConfigError, load_data
from diplostance.devices import DeviceError
from diplostance.predictors import ModelFolderError, check_model_folder
from diplostance.training import ConfigError, resolve_num_threads, train
from tests.conftest import FAST_TINY, FIXTURES, compose_config, train_config
from tests.test_reliability import assert_user_error, run

OWN = FIXTURES / "own_data"
ARABIC = [
    "data=file",
    f"data.train={OWN / 'arabic_train.csv'}",
    f"data.test={OWN / 'arabic_test.csv'}",
    "data.columns.text='النص'",
    "data.columns.target='الهدف'",
    "data.columns.stance='الموقف'",
]
MAPS = [f"data.polarity_map_file={OWN / 'polarity_map.yaml'}", f"data.target_map_file={OWN / 'target_map.json'}"]


def arabic_data(*overrides: str):
    return load_data(compose_config("train", [*ARABIC, *overrides]).data)


def write(path, text: str):
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- data maps that lose labels


def test_a_polarity_map_sending_two_spellings_to_one_polarity_is_refused_naming_the_file_and_both(tmp_path):
    merging = write(tmp_path / "polarity_map.yaml", "مؤيد: favor\nمعارض: favor\nمحايد: none\n")
    with pytest.raises(DataConfigError) as refused:
        arabic_data(f"data.polarity_map_file={merging}", f"data.target_map_file={OWN / 'target_map.json'}")
    message = str(refused.value)
    assert message.startswith(f"{merging}: ") and "\n" not in message
    assert "'مؤيد'" in message and "'معارض'" in message and "'favor'" in message
    assert "data.allow_merging_maps=true" in message


def test_a_target_map_sending_two_data_targets_to_one_name_is_refused(tmp_path):
    merging = write(tmp_path / "target_map.json", '{"الاتفاقية الأممية": "un_treaty", "حوكمة الإنترنت": "un_treaty"}')
    with pytest.raises(DataConfigError, match=r"'الاتفاقية الأممية' .*'حوكمة الإنترنت'|'حوكمة الإنترنت' .*'الاتفاقية"):
        arabic_data(f"data.polarity_map_file={OWN / 'polarity_map.yaml'}", f"data.target_map_file={merging}")


def test_a_merging_map_said_to_be_meant_is_used_and_its_counts_are_reported(tmp_path):
    merging = write(tmp_path / "polarity_map.yaml", "مؤيد: favor\nمعارض: favor\nمحايد: none\n")
    data = arabic_data(
        f"data.polarity_map_file={merging}",
        f"data.target_map_file={OWN / 'target_map.json'}",
        "data.allow_merging_maps=true",
    )
    polarity = data.summary["labels"]["polarity"]
    assert polarity["as_read"] == {"مؤيد": 22, "محايد": 22, "معارض": 22}
    assert polarity["mapped"] == {"favor": 44, "none": 22}


def test_the_label_counts_before_and_after_mapping_are_logged_and_summarised(caplog):
    with caplog.at_level(logging.INFO, logger="diplostance.data"):
        data = arabic_data(*MAPS)
    target = data.summary["labels"]["target"]
    assert target == {
        "as_read": {"حوكمة الإنترنت": 33, "الاتفاقية الأممية": 33},
        "mapped": {"multistakeholder": 33, "un_treaty": 33},
    }
    assert "{'مؤيد': 22, 'محايد': 22, 'معارض': 22}; as mapped {'favor': 22, 'none': 22, 'against': 22}" in caplog.text


def test_the_shipped_polarity_synonyms_still_merge_with_the_polarity_names():
    data = load_data(
        compose_config(
            "train",
            ["data=file", f"data.train={FIXTURES / 'data' / 'long_train.csv'}", "data.dev_fraction=0"],
        ).data
    )  # FAVOR and `with` (a shipped synonym) are one polarity, as before
    assert data.summary["labels"]["polarity"]["mapped"]["favor"] == 4


def test_the_synonyms_exempt_from_the_merge_check_are_the_shipped_polarity_map():
    from diplostance.data import SHIPPED_POLARITY_SYNONYMS

    assert dict(compose_config("train", ["data=file"]).data.polarity_map) == SHIPPED_POLARITY_SYNONYMS


# ---------------------------------------------------------------- data formats and ids


def test_jsonl_format_on_a_json_array_suggests_format_json(tmp_path):
    records = [{"text": f"ندعم المشروع {i}", "stance": "favor"} for i in range(3)]
    array = write(tmp_path / "Neom.json", json.dumps(records, ensure_ascii=False))
    with pytest.raises(DataConfigError, match=r"holds a JSON array, not JSON Lines .*use data\.format=json$"):
        load_data(
            compose_config(
                "train", ["data=file", "data.format=jsonl", "data.target_from=filename", f"data.train={array}"]
            ).data
        )


def test_a_json_lines_field_named_id_names_the_sentences_without_data_columns_id(tmp_path):
    lines = [{"id": f"s{i}", "text": f"ندعم الاتفاقية رقم {i}", "stances": {"t": "favor"}} for i in range(4)]
    path = write(tmp_path / "test.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in lines))
    cfg = compose_config("evaluate", ["data=file", "data.format=jsonl", "data.layout=wide", f"data.test={path}"])
    assert load_data(cfg.data).split("test")["id"] == ["s0", "s1", "s2", "s3"]


# ---------------------------------------------------------------- threads and devices


@pytest.mark.parametrize("setting", [0, -1, "abc"])
def test_an_impossible_thread_count_is_a_config_error(setting):
    with pytest.raises(ConfigError, match=r"training\.num_threads must be a whole number >= 1"):
        resolve_num_threads(setting)


def test_a_thread_count_that_is_not_a_number_is_one_line_from_train_py(tmp_path):
    result = run("train.py", "model=tfidf", "training.num_threads=abc", f"hydra.run.dir={tmp_path / 'run'}")
    assert_user_error(result, 2, "training.num_threads must be a whole number >= 1")
    assert result.stderr.strip().splitlines()[-1].startswith("error: training.num_threads must be")


def test_the_training_config_says_what_a_null_thread_count_does():
    default = (FIXTURES.parents[1] / "configs" / "training" / "default.yaml").read_text(encoding="utf-8")
    assert "torch's default" not in default and "1-minute load average" in default


@pytest.mark.skipif(torch.cuda.is_available(), reason="describes a machine without a GPU")
def test_training_gpu_without_a_gpu_stops_before_any_work(tmp_path):
    with pytest.raises(DeviceError, match=r"training=gpu needs a CUDA GPU .*training\.use_cpu=true"):
        train(train_config(*[o for o in FAST_TINY if o != "training.use_cpu=true"], "training=gpu"), tmp_path)
    assert not any(tmp_path.iterdir())


def test_training_gpu_on_the_cpu_on_purpose_is_allowed():
    from diplostance.devices import check_training_device

    check_training_device(train_config("training=gpu", "training.use_cpu=true").training)


# ---------------------------------------------------------------- model folders and recipes


def test_a_run_folder_with_an_ensemble_points_at_the_ensemble(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "ensemble" / "model").mkdir(parents=True)
    write(tmp_path / "metrics.json", "{}")
    with pytest.raises(ModelFolderError, match=r"did you mean .*ensemble/model \(the run's headline model"):
        check_model_folder(tmp_path)


def test_model_e5_small_alone_uses_the_measured_recipe():
    recipe = train_config("experiment=e5_ensemble")
    alone = train_config("model=e5_small")
    keys = ("epochs", "learning_rate", "max_length", "early_stopping_patience")
    assert (
        {k: alone.training[k] for k in keys}
        == {k: recipe.training[k] for k in keys}
        == {
            "epochs": 8,
            "learning_rate": 8.0e-5,
            "max_length": 96,
            "early_stopping_patience": 3,
        }
    )
    assert alone.model.freeze_embeddings is True
    assert train_config("model=tiny").training.epochs == 30  # other models keep the training defaults


LOAD_REPORT = (
    "\x1b[1mBertForSequenceClassification LOAD REPORT\x1b[0m from: /cache/e5-small\n"
    "Key                      | Status  | \n-------------------------+---------+-\n"
    "bert.pooler.dense.weight | \x1b[31mMISSING\x1b[0m | \nclassifier.weight        | \x1b[31mMISSING\x1b[0m | \n"
    "classifier.bias          | \x1b[31mMISSING\x1b[0m | \nbert.pooler.dense.bias   | \x1b[31mMISSING\x1b[0m | \n\n"
    "Notes:\n- MISSING:\tthose params were newly initialized because missing from the checkpoint."
)


def report_record(message: str) -> logging.LogRecord:
    return logging.LogRecord("transformers.modeling_utils", logging.WARNING, __file__, 1, message, None, None)


def test_the_new_head_load_report_becomes_one_line_that_says_it_is_expected():
    from diplostance.training import _NewHeadReport

    record = report_record(LOAD_REPORT)
    assert _NewHeadReport().filter(record)
    line = record.getMessage()
    assert "\n" not in line and "classifier.weight" in line and "expected" in line
    assert record.levelno == logging.INFO


def test_a_load_report_with_a_missing_encoder_weight_is_left_as_it_is():
    from diplostance.training import _NewHeadReport

    broken = LOAD_REPORT.replace("classifier.bias         ", "bert.encoder.layer.0.x.w")
    record = report_record(broken)
    assert _NewHeadReport().filter(record) and record.getMessage() == broken and record.levelno == logging.WARNING


# ---------------------------------------------------------------- the C grid's edge


def test_a_c_chosen_at_the_grids_edge_and_scoring_best_there_is_warned_about():
    from diplostance.training import grid_edge_warnings

    facts = {
        "selection": {
            "a": {"C": 16.0, "dev_f_avg_by_C": {"4.0": 0.60, "8.0": 0.62, "16.0": 0.65}},
            "b": {"C": 8.0, "dev_f_avg_by_C": {"4.0": 0.60, "8.0": 0.66, "16.0": 0.65}},
            "c": {"C": 4.0, "dev_f_avg_by_C": {"4.0": 0.60, "8.0": 0.60, "16.0": 0.60}},  # a tie: no signal
        }
    }
    warnings = grid_edge_warnings(facts, "model.embedding.C_grid")
    assert len(warnings) == 1 and "C=16" in warnings[0] and "'a'" in warnings[0] and "'b'" not in warnings[0]
    assert "model.embedding.C_grid" in warnings[0]
    assert [facts["selection"][t].get("C_at_grid_edge") for t in "abc"] == ["largest", None, None]


# ---------------------------------------------------------------- the headline model


def gate_metrics(headline: float, main: float) -> dict:
    targets = lambda f: {"t": {"f_avg": f}}  # noqa: E731
    return {
        "macro_f_avg": headline,
        "targets": targets(headline),
        "headline": "ensemble",
        "model": {"macro_f_avg": main, "targets": targets(main)},
        "config": {"model": {"name": "tiny"}},
    }


def test_the_gate_judges_the_main_model_when_the_headline_is_an_ensemble():
    from diplostance.regression import gated_figures

    assert gated_figures(gate_metrics(headline=0.9, main=0.5)) == {"macro_f_avg": 0.5, "f_avg/t": 0.5}


def test_the_quality_gate_reads_each_runs_main_model(tmp_path):
    from diplostance.gate import read_runs

    record = {"id": "s1", "source": "seed", "stances": {"t": {"gold": "favor", "probs": {"favor": 0.9, "none": 0.1}}}}
    write(tmp_path / "predictions.jsonl", json.dumps(record) + "\n")
    write(tmp_path / "metrics.json", json.dumps(gate_metrics(headline=0.9, main=0.5)))
    assert read_runs([tmp_path]).members[0]["macro_f_avg"] == 0.5


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    """A tiny model and the tf-idf baseline on the Arabic fixture, with their ensemble (seconds)."""
    run_dir = tmp_path_factory.mktemp("ensemble_run")
    tiny = [o for o in FAST_TINY if o != "compare_baseline=false"]
    metrics = train(compose_config("train", [*tiny, *ARABIC, *MAPS, "compare_baseline=true", "ensemble=true"]), run_dir)
    return run_dir, metrics


def test_metrics_json_leads_with_the_headline_model_and_keeps_the_main_model_under_model(ensemble_run):
    run_dir, _ = ensemble_run
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    ensemble = json.loads((run_dir / "ensemble" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["headline"] == "ensemble" and metrics["model_dir"] == str(run_dir / "ensemble" / "model")
    assert metrics["macro_f_avg"] == ensemble["macro_f_avg"] and metrics["targets"] == ensemble["targets"]
    assert metrics["model"]["model_dir"] == str(run_dir / "model")
    assert {"baseline", "ensemble", "training", "config"} <= set(metrics)


def test_the_console_ends_with_the_headline_model_its_folder_and_its_score(ensemble_run):
    from diplostance.reports import headline_lines

    run_dir, metrics = ensemble_run
    lines = headline_lines(metrics, run_dir)
    assert lines[0].startswith("headline model: the ensemble (transformer + tfidf), test macro_f_avg ")
    assert f"{metrics['macro_f_avg']:.3f}" in lines[0]
    assert lines[1].strip() == f"folder: {run_dir / 'ensemble' / 'model'}"
    assert f"tiny {metrics['model']['macro_f_avg']:.3f}" in lines[2]


def test_the_reports_data_line_names_the_evaluated_files_and_the_mapping(ensemble_run):
    run_dir, metrics = ensemble_run
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    data_line = next(line for line in report.splitlines() if line.startswith("Data: "))
    assert "arabic_test.csv" in data_line and "arabic_train.csv" not in data_line
    assert "as read → as mapped" in report and "مؤيد: 22" in report
    assert metrics["data_summary"]["labels"]["polarity"]["mapped"] == {"favor": 22, "none": 22, "against": 22}


def test_check_regression_judges_the_runs_main_model(ensemble_run):
    from diplostance.regression import compare

    _, metrics = ensemble_run
    main = metrics["model"]
    figures = {"macro_f_avg": main["macro_f_avg"], **{f"f_avg/{t}": s["f_avg"] for t, s in main["targets"].items()}}
    baseline = {"models": {"tiny": {"figures": figures, "tolerance": dict.fromkeys(figures, 0.0)}}}
    _, rows = compare(metrics, baseline)
    assert all(row.now == row.baseline for row in rows)
