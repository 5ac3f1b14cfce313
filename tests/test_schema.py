"""The label space: targets x polarities, and its `target=polarity` model labels."""

from __future__ import annotations

from pathlib import Path

import pytest

from diplostance.schema import IGNORE_INDEX, LabelSpace

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def labels() -> LabelSpace:
    return LabelSpace(("un_treaty", "bilateral_cbm"), ("favor", "against", "none"))


def test_id2label_is_target_major(labels):
    assert labels.id2label == {
        0: "un_treaty=favor",
        1: "un_treaty=against",
        2: "un_treaty=none",
        3: "bilateral_cbm=favor",
        4: "bilateral_cbm=against",
        5: "bilateral_cbm=none",
    }
    assert labels.num_labels == 6


def test_label2id_inverts_id2label(labels):
    assert labels.label2id == {label: i for i, label in labels.id2label.items()}


def test_from_id2label_round_trip(labels):
    assert LabelSpace.from_id2label(labels.id2label) == labels


def test_from_id2label_accepts_string_keys_as_saved_in_config_json(labels):
    saved = {str(i): label for i, label in reversed(labels.id2label.items())}
    assert LabelSpace.from_id2label(saved) == labels


def test_from_id2label_rejects_labels_without_separator():
    with pytest.raises(ValueError, match="target=polarity"):
        LabelSpace.from_id2label({0: "LABEL_0", 1: "LABEL_1"})


def test_from_id2label_rejects_a_layout_that_is_not_target_major():
    polarity_major = {0: "a=favor", 1: "b=favor", 2: "a=against", 3: "b=against"}
    with pytest.raises(ValueError, match="target-major"):
        LabelSpace.from_id2label(polarity_major)


def test_encode_gives_polarity_index_per_target(labels):
    assert labels.encode({"un_treaty": "against", "bilateral_cbm": "none"}) == [1, 2]


def test_encode_masks_a_target_that_is_not_annotated(labels):
    assert labels.encode({"bilateral_cbm": "favor"}) == [IGNORE_INDEX, 0]
    assert labels.encode({"un_treaty": None, "bilateral_cbm": "favor"}) == [-100, 0]


@pytest.mark.parametrize(
    "targets, polarities",
    [
        ((), ("favor", "against")),
        (("un_treaty",), ()),
        (("un_treaty", "un_treaty"), ("favor", "against")),
        (("un_treaty",), ("favor", "favor")),
        (("un=treaty",), ("favor", "against")),
        (("un_treaty",), ("favor", " ")),
    ],
    ids=["no-targets", "no-polarities", "duplicate-target", "duplicate-polarity", "separator-in-name", "blank-name"],
)
def test_invalid_names_are_rejected(targets, polarities):
    with pytest.raises(ValueError):
        LabelSpace(targets, polarities)


def test_load_the_shipped_schema():
    labels = LabelSpace.load(ROOT / "annotations" / "schema.yaml")
    assert labels.targets == ("un_treaty", "multistakeholder", "bilateral_cbm")
    assert labels.polarities == ("favor", "against", "none")
    assert labels.version == "1.0"
    assert labels.descriptions["bilateral_cbm"].name_en == "Bilateral confidence-building measures"
    assert labels.id2label[0] == "un_treaty=favor"
    assert labels.id2label[8] == "bilateral_cbm=none"


def test_load_accepts_a_plain_list_of_targets(tmp_path):
    path = tmp_path / "schema.yaml"
    path.write_text("polarities: [favor, against, none]\ntargets: [a, b]\n", encoding="utf-8")
    assert LabelSpace.load(path) == LabelSpace(("a", "b"), ("favor", "against", "none"))


def test_load_rejects_a_schema_without_polarities(tmp_path):
    path = tmp_path / "schema.yaml"
    path.write_text("targets: [a, b]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="polarities"):
        LabelSpace.load(path)
