"""The `file` data config: long and wide layouts, odd polarity spellings, clear errors."""

import pytest
from omegaconf import OmegaConf

from diplostance.data import DataError, load_data
from diplostance.schema import IGNORE_INDEX
from tests.conftest import FIXTURES, ROOT, compose_config

DATA = FIXTURES / "data"


def file_data(*overrides: str):
    return compose_config("train", ["data=file", *overrides]).data


def test_long_csv_groups_rows_into_sentences_and_maps_spellings():
    data = load_data(
        file_data(
            "data.format=csv",
            "data.layout=long",
            f"data.train={DATA / 'long_train.csv'}",
            f"data.test={DATA / 'long_test.csv'}",
            "data.columns.id=id",
            "data.dev_fraction=0",
        )
    )
    assert data.labels.targets == ("treaty", "governance")
    train = data.split("train")
    assert len(train) == 8  # 11 rows, 8 distinct sentence ids
    first = train[0]
    assert first["labels"] == [0, 2]  # FAVOR -> favor, None -> none (a spelling, not a missing value)


def test_single_target_rows_leave_the_other_target_unannotated():
    data = load_data(file_data(f"data.train={DATA / 'long_train.csv'}", "data.columns.id=id", "data.dev_fraction=0"))
    by_text = {row["text"]: row["labels"] for row in data.split("train")}
    assert by_text["نرفض معاهدة جديدة لأن القانون الدولي القائم كاف"] == [1, IGNORE_INDEX]


def test_without_dev_file_a_seeded_share_of_train_is_held_out():
    cfg = file_data(f"data.train={DATA / 'long_train.csv'}", "data.columns.id=id", "data.dev_fraction=0.25")
    first, second = load_data(cfg), load_data(cfg)
    assert len(first.split("dev")) == 2 and len(first.split("train")) == 6
    assert first.split("dev")["id"] == second.split("dev")["id"]


def test_wide_jsonl_with_a_stances_object():
    data = load_data(
        file_data(
            "data.format=jsonl",
            "data.layout=wide",
            f"data.train={DATA / 'wide_train.jsonl'}",
            "data.columns.stances=stances",
            "data.dev_fraction=0",
        )
    )
    rows = data.split("train")["labels"]
    assert data.labels.targets == ("treaty", "governance")
    assert rows[0] == [0, 2] and rows[1] == [1, IGNORE_INDEX] and rows[2] == [2, 0]


def test_wide_tsv_with_one_column_per_target_and_an_empty_cell():
    data = load_data(
        file_data(
            "data.format=tsv",
            "data.layout=wide",
            f"data.train={DATA / 'wide_columns.tsv'}",
            "data.columns.targets=[treaty,governance]",
            "data.dev_fraction=0",
        )
    )
    assert data.split("train")["labels"] == [[0, 2], [IGNORE_INDEX, 1], [2, 2]]


def test_target_map_renames_dataset_targets():
    data = load_data(
        file_data(
            f"data.train={DATA / 'long_train.csv'}",
            "data.columns.id=id",
            "data.dev_fraction=0",
            "+data.target_map.treaty=un_treaty",
        )
    )
    assert data.labels.targets[0] == "un_treaty"


def test_unknown_polarity_spellings_are_all_reported_with_line_numbers():
    with pytest.raises(DataError) as error:
        load_data(file_data(f"data.train={DATA / 'bad_polarity.csv'}", "data.dev_fraction=0"))
    message = str(error.value)
    assert "bad_polarity.csv: line 3: unknown polarity 'maybe'" in message
    assert "line 4: unknown polarity 'sort-of'" in message


def test_missing_column_names_the_column_and_what_the_file_has():
    with pytest.raises(DataError, match=r"column\(s\) \['sentence'\] not found"):
        load_data(file_data(f"data.train={DATA / 'long_train.csv'}", "data.columns.text=sentence"))


def test_missing_file_is_named():
    with pytest.raises(DataError, match=r"nope\.csv: data file not found"):
        load_data(file_data("data.train=nope.csv"))


def test_bad_format_is_a_config_error():
    with pytest.raises(DataError, match=r"data\.format must be one of"):
        load_data(file_data("data.format=xlsx", f"data.train={DATA / 'long_train.csv'}"))


def test_annotations_config_loads_the_shipped_splits():
    cfg = OmegaConf.create({"kind": "annotations", "directory": str(ROOT / "annotations"), "seeds": None})
    data = load_data(cfg)
    assert set(data.splits) == {"train", "dev", "test"}
    assert "seed" in data.split("test")["source"]


CONFLICTING = (
    "text,target,stance\nنص مكرر,treaty,none\nنص آخر,treaty,favor\nنص مكرر,treaty,favor\nنص مكرر,treaty,favor\n"
)


@pytest.mark.parametrize(("rule", "expected"), [("majority", 0), ("first", 2), ("last", 0), ("drop", IGNORE_INDEX)])
def test_data_duplicates_resolves_conflicting_labels_and_says_how_many(tmp_path, rule, expected):
    """Mawqif gives one tweet three rows with conflicting labels: a rule other than `error` trains on it."""
    path = tmp_path / "conflicts.csv"
    path.write_text(CONFLICTING, encoding="utf-8")
    data = load_data(file_data(f"data.train={path}", "data.dev_fraction=0", f"data.duplicates={rule}"))
    assert data.split("train")["labels"][0] == [expected]
    assert any(
        f"1 sentence/target pair(s) had conflicting labels over 3 row(s), resolved by data.duplicates={rule}" in w
        for w in data.warnings
    )


def test_conflicting_labels_stay_an_error_by_default(tmp_path):
    path = tmp_path / "conflicts.csv"
    path.write_text(CONFLICTING, encoding="utf-8")
    with pytest.raises(DataError, match=r"line 4: conflicting labels.*data\.duplicates=first\|last\|majority\|drop"):
        load_data(file_data(f"data.train={path}", "data.dev_fraction=0"))
