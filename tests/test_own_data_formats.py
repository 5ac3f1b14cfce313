"""Issue 19, points 4 and 6: datasets as published (JSON per target, Mawqif's long CSV) and Arabic
names that Hydra overrides cannot spell (map files, `--config-dir` data configs)."""

import json
import subprocess
import sys

import pytest

from diplostance.data import DataConfigError, DataError, load_data
from diplostance.schema import IGNORE_INDEX
from tests.conftest import FIXTURES, ROOT, SAFETY_TIMEOUT_S, compose_config

OWN = FIXTURES / "own_data"
STANCEX = OWN / "stancex_like"


def file_data(*overrides: str):
    return load_data(compose_config("train", ["data=file", *overrides]).data)


def test_one_json_file_per_target_named_by_its_file_as_arabicstancex_ships_it():
    data = file_data(
        "data.format=json",
        "data.target_from=filename",
        f"data.train={STANCEX}/train/*/*.json",
        f"data.test={STANCEX}/test/*/*.json",
        "data.dev_fraction=0",
    )
    assert data.labels.targets == ("Neom", "Vaccine")  # sorted paths: economy/Neom.json, health/Vaccine.json
    assert {name: len(split) for name, split in data.splits.items()} == {"train": 48, "test": 18}
    first = data.split("train")[0]
    assert first["text"].startswith("ندعم مشروع نيوم") and first["labels"] == [0, IGNORE_INDEX]


@pytest.mark.parametrize("shape", ["array", "lines"])
def test_json_reads_an_array_of_records_and_json_lines_alike(tmp_path, shape):
    records = [{"text": "ندعم المشروع", "stance": "Favor"}, {"text": "نرفض المشروع", "stance": "against"}]
    path = tmp_path / "Neom.json"
    body = json.dumps(records) if shape == "array" else "\n".join(json.dumps(r) for r in records) + "\n"
    path.write_text(body, encoding="utf-8")
    data = file_data("data.format=json", "data.target_from=filename", f"data.train={path}", "data.dev_fraction=0")
    assert data.labels.targets == ("Neom",) and data.split("train")["labels"] == [[0], [1]]


def test_a_glob_that_matches_nothing_is_named():
    with pytest.raises(DataConfigError, match=r"data\.train: no file matches .*nothing/\*\.json"):
        file_data("data.format=json", "data.target_from=filename", f"data.train={OWN}/nothing/*.json")


def test_mawqif_long_csv_with_a_bom_and_target_names_with_spaces_reads_as_published():
    data = file_data(
        f"data.train={OWN / 'mawqif_like_Train.csv'}", f"data.test={OWN / 'mawqif_like_Test.csv'}", "data.columns.id=ID"
    )
    assert data.labels.targets == ("Women empowerment", "Covid Vaccine")
    assert len(data.split("train")) + len(data.split("dev")) == 48 and len(data.split("test")) == 18


def test_map_files_rename_arabic_targets_and_polarity_spellings():
    data = file_data(
        f"data.train={OWN / 'arabic_train.csv'}",
        "data.columns.text='النص'",
        "data.columns.target='الهدف'",
        "data.columns.stance='الموقف'",
        f"data.polarity_map_file={OWN / 'polarity_map.yaml'}",
        f"data.target_map_file={OWN / 'target_map.json'}",
        "data.dev_fraction=0",
    )
    assert set(data.labels.targets) == {"un_treaty", "multistakeholder"}
    assert {label for row in data.split("train")["labels"] for label in row} - {IGNORE_INDEX} == {0, 1, 2}


def test_without_the_polarity_file_the_arabic_spellings_are_reported():
    with pytest.raises(DataError, match=r"unknown polarity 'مؤيد'.*data\.polarity_map_file"):
        file_data(
            f"data.train={OWN / 'arabic_train.csv'}",
            "data.columns.text='النص'",
            "data.columns.target='الهدف'",
            "data.columns.stance='الموقف'",
        )


def test_a_map_file_that_is_not_a_mapping_is_a_config_error(tmp_path):
    bad = tmp_path / "map.yaml"
    bad.write_text("- favor\n- against\n", encoding="utf-8")
    with pytest.raises(DataConfigError, match=r"map\.yaml: data\.polarity_map_file must map each spelling"):
        file_data(f"data.train={OWN / 'arabic_train.csv'}", f"data.polarity_map_file={bad}")


def train_script(tmp_path, *args: str) -> dict:
    run_dir = tmp_path / "run"
    command = [sys.executable, "scripts/train.py", *args, "model=tfidf", "bootstrap_resamples=0"]
    result = subprocess.run(
        [*command, f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True, timeout=SAFETY_TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_train_py_with_quoted_arabic_columns_and_map_files(tmp_path):
    metrics = train_script(
        tmp_path,
        "data=file",
        "data.train=tests/fixtures/own_data/arabic_train.csv",
        "data.test=tests/fixtures/own_data/arabic_test.csv",
        "data.columns.text='النص'",
        "data.columns.target='الهدف'",
        "data.columns.stance='الموقف'",
        "data.polarity_map_file=tests/fixtures/own_data/polarity_map.yaml",
        "data.target_map_file=tests/fixtures/own_data/target_map.json",
    )
    assert set(metrics["targets"]) == {"un_treaty", "multistakeholder"} and metrics["num_examples"] == 18


@pytest.mark.slow
def test_train_py_with_an_arabic_data_config_from_config_dir(tmp_path):
    metrics = train_script(tmp_path, "--config-dir", "tests/fixtures/own_data/conf", "data=arabic_csv")
    assert set(metrics["targets"]) == {"un_treaty", "multistakeholder"} and metrics["num_examples"] == 18
