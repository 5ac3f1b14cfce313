"""The stance metric module against hand-computed cases."""

import evaluate
import pytest

from diplostance.errors import BadDataError
from diplostance.scoring import STANCE_METRIC_PATH, NothingToScoreError, bootstrap_intervals, stance_scores

POLARITIES = ["favor", "against", "none"]


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(STANCE_METRIC_PATH)  # by path: no Hub


def test_hand_computed_single_target(metric):
    # gold:  favor favor against none none
    # pred:  favor none  against against none
    refs = [[0], [0], [1], [2], [2]]
    preds = [[0], [2], [1], [1], [2]]
    result = metric.compute(predictions=preds, references=refs, targets=["t"], polarities=POLARITIES)
    labels = result["targets"]["t"]["labels"]
    # favor: P=1/1, R=1/2, F1=2/3; against: P=1/2, R=1/1, F1=2/3; none: P=1/2, R=1/2, F1=1/2
    assert labels["favor"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert labels["against"]["precision"] == 0.5 and labels["against"]["f1"] == pytest.approx(2 / 3)
    assert labels["none"]["f1"] == pytest.approx(0.5)
    assert result["targets"]["t"]["f_avg"] == pytest.approx(2 / 3)
    assert result["targets"]["t"]["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0.5) / 3)


def test_overall_scores_average_over_targets(metric):
    refs = [[0, 1], [1, 1]]
    preds = [[0, 1], [1, 0]]
    result = metric.compute(predictions=preds, references=refs, targets=["a", "b"], polarities=POLARITIES)
    # a is perfect: f_avg 1.0. b: against P=1 R=1/2 F1=2/3, favor P=0 -> f_avg 1/3
    assert result["targets"]["a"]["f_avg"] == 1.0
    assert result["targets"]["b"]["f_avg"] == pytest.approx(1 / 3)
    assert result["macro_f_avg"] == pytest.approx((1.0 + 1 / 3) / 2)


def test_unannotated_targets_are_left_out_not_scored_zero(metric):
    refs = [[0, -100], [1, -100]]
    preds = [[0, 2], [1, 2]]
    result = metric.compute(predictions=preds, references=refs, targets=["a", "b"], polarities=POLARITIES)
    assert list(result["targets"]) == ["a"]
    assert result["macro_f_avg"] == 1.0


def test_masked_examples_do_not_count_towards_support():
    result = stance_scores([[0], [0], [1]], [[0], [-100], [1]], ["a"], POLARITIES)
    assert result["targets"]["a"]["labels"]["favor"]["support"] == 1


def test_nothing_annotated_is_a_one_line_data_error():
    with pytest.raises(NothingToScoreError, match="every label is empty") as raised:
        stance_scores([[0]], [[-100]], ["a"], POLARITIES)
    assert isinstance(raised.value, BadDataError) and raised.value.exit_code == 1


def test_f_avg_without_any_favor_or_against_label_is_undefined_not_zero(metric):
    refs = [[2], [2], [2]]  # only `none` in the gold labels
    result = metric.compute(predictions=[[2], [0], [2]], references=refs, targets=["a"], polarities=POLARITIES)
    assert result["targets"]["a"]["f_avg"] is None and result["macro_f_avg"] is None
    assert result["macro_f1"] == pytest.approx((0 + 0 + 0.8) / 3)  # none: P=1, R=2/3; still defined


def test_a_target_with_an_undefined_f_avg_is_left_out_of_macro_f_avg(metric):
    refs = [[0, 2], [1, 2]]
    result = metric.compute(predictions=[[0, 2], [1, 0]], references=refs, targets=["a", "b"], polarities=POLARITIES)
    assert result["targets"]["b"]["f_avg"] is None and result["macro_f_avg"] == 1.0


def test_ranking_callers_keep_a_number_for_an_undefined_f_avg():
    result = stance_scores([[2]], [[2]], ["a"], POLARITIES)  # the default: 0.0, for checkpoint and grid choices
    assert result["targets"]["a"]["f_avg"] == 0.0 and result["macro_f_avg"] == 0.0


def test_bootstrap_of_an_undefined_figure_has_no_interval():
    refs = [[2]] * 20
    intervals = bootstrap_intervals(refs, refs, ["a"], POLARITIES, n_resamples=50)
    assert intervals["macro_f_avg"] is None and intervals["targets"] == {}


def test_bootstrap_interval_brackets_the_point_estimate():
    refs = [[i % 3] for i in range(60)]
    preds = [[i % 3] if i % 4 else [(i + 1) % 3] for i in range(60)]
    point = stance_scores(preds, refs, ["a"], POLARITIES)["macro_f_avg"]
    low, high = bootstrap_intervals(preds, refs, ["a"], POLARITIES, n_resamples=300)["macro_f_avg"]
    assert low < point < high
