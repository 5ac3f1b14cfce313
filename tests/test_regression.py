"""The quality gate: regressions beyond tolerance fail, noise passes, bad files are errors."""

import copy
import json
import subprocess
import sys

import pytest

from diplostance.regression import GateError, baseline_entry, compare, gated_figures, update_baseline
from tests.conftest import ROOT, SAFETY_TIMEOUT_S

METRICS = {
    "macro_f_avg": 0.60,
    "targets": {"a": {"f_avg": 0.70}, "b": {"f_avg": 0.50}},
    "seed_slice": {"macro_f_avg": 0.40, "targets": {"a": {"f_avg": 0.40}}},
    "config": {"model": {"name": "tiny"}, "seed": 42},
}
BASELINE = {
    "models": {
        "tiny": {
            "figures": {"macro_f_avg": 0.60, "f_avg/a": 0.70, "f_avg/b": 0.50, "seed_slice/macro_f_avg": 0.40},
            "tolerance": {"macro_f_avg": 0.02, "f_avg/a": 0.05, "f_avg/b": 0.05, "seed_slice/macro_f_avg": 0.10},
        }
    }
}


def with_changes(**figures) -> dict:
    metrics = copy.deepcopy(METRICS)
    for key, value in figures.items():
        if key == "macro_f_avg":
            metrics["macro_f_avg"] = value
        else:
            metrics["targets"][key]["f_avg"] = value
    return metrics


def verdicts(metrics) -> dict[str, bool]:
    _, rows = compare(metrics, BASELINE)
    return {row.metric: row.passed for row in rows}


def test_a_drop_within_tolerance_passes():
    assert all(verdicts(with_changes(macro_f_avg=0.585, a=0.66)).values())


def test_a_drop_beyond_tolerance_fails_that_row():
    result = verdicts(with_changes(macro_f_avg=0.57))
    assert result["macro_f_avg"] is False and result["f_avg/a"] is True


def test_one_target_falling_fails_even_when_the_mean_holds():
    assert verdicts(with_changes(b=0.40))["f_avg/b"] is False


def test_the_seed_slice_is_its_own_row():
    assert "seed_slice/macro_f_avg" in verdicts(METRICS)


def test_a_missing_target_is_an_error_not_a_pass():
    metrics = copy.deepcopy(METRICS)
    del metrics["targets"]["b"]
    with pytest.raises(GateError, match="f_avg/b"):
        compare(metrics, BASELINE)


def test_a_non_numeric_figure_is_an_error():
    metrics = with_changes(macro_f_avg="0.6")
    with pytest.raises(GateError, match="macro_f_avg"):
        gated_figures(metrics)


def test_a_model_without_a_baseline_entry_is_an_error():
    metrics = copy.deepcopy(METRICS)
    metrics["config"]["model"]["name"] = "marbert"
    with pytest.raises(GateError, match="no entry for model 'marbert'"):
        compare(metrics, BASELINE)


def test_tolerance_is_three_seed_deviations_or_the_bootstrap_error_whichever_is_larger():
    runs = [with_changes(macro_f_avg=v) for v in (0.58, 0.60, 0.62)]  # stdev 0.02
    metrics = {
        **METRICS,
        "bootstrap": {
            "macro_f_avg": [0.55, 0.6392],
            "targets": {"a": {"f_avg": [0.6, 0.8]}, "b": {"f_avg": [0.5, 0.5]}},
        },
    }
    entry = baseline_entry(metrics, runs)
    assert entry["tolerance"]["macro_f_avg"] == pytest.approx(0.06)  # 3 * 0.02 > 0.0892 / 3.92
    assert entry["tolerance"]["f_avg/a"] == pytest.approx(0.2 / 3.92, abs=1e-4)  # no seed spread: bootstrap floor
    assert entry["derivation"]["macro_f_avg"]["seed_values"] == [0.58, 0.60, 0.62]


def test_a_single_run_is_judged_against_the_single_run_block_of_a_quality_gate_entry():
    # a quality-gate entry's top-level figures are seed-ensemble figures, higher than one run reaches
    ensemble = {
        key: {metric: value + 0.1 for metric, value in block.items()}
        for key, block in BASELINE["models"]["tiny"].items()
    }
    baseline = {"models": {"tiny": {**ensemble, "single_run": BASELINE["models"]["tiny"]}}}
    _, rows = compare(METRICS, baseline)
    assert [row.baseline for row in rows] == list(BASELINE["models"]["tiny"]["figures"].values())
    assert all(row.passed for row in rows)


def test_update_needs_several_seed_runs(tmp_path):
    with pytest.raises(GateError, match="at least 3 seed_runs"):
        update_baseline(tmp_path / "baseline.json", METRICS, [METRICS])


def gate(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_regression.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT_S,
        env={"PATH": "/usr/bin:/bin"},
    )


def write(path, data):
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


def test_script_exits_1_and_prints_the_table_on_a_regression(tmp_path):
    metrics = write(tmp_path / "metrics.json", with_changes(b=0.30))
    baseline = write(tmp_path / "baseline.json", BASELINE)
    result = gate(f"metrics={metrics}", f"baseline={baseline}")
    assert result.returncode == 1
    assert "| f_avg/b | 0.5000 | 0.3000 | -0.2000 | 0.0500 | **FAIL** |" in result.stdout
    assert "quality gate FAILED for tiny: f_avg/b" in result.stderr


def test_script_passes_and_appends_to_the_step_summary(tmp_path):
    metrics = write(tmp_path / "metrics.json", METRICS)
    baseline = write(tmp_path / "baseline.json", BASELINE)
    summary = tmp_path / "summary.md"
    result = gate(f"metrics={metrics}", f"baseline={baseline}", f"summary_file={summary}")
    assert result.returncode == 0, result.stderr
    assert "| metric | baseline | now | delta | tolerance | verdict |" in summary.read_text()


def test_script_reports_a_malformed_metrics_file_as_an_error(tmp_path):
    metrics = write(tmp_path / "metrics.json", "{not json")
    result = gate(f"metrics={metrics}", f"baseline={write(tmp_path / 'b.json', BASELINE)}")
    assert result.returncode == 1 and "is not valid JSON" in result.stderr


def test_the_committed_baseline_covers_both_gated_models():
    baseline = json.loads((ROOT / "benchmarks" / "quality_baseline.json").read_text())
    assert {"tiny", "tfidf"} <= set(baseline["models"])
    for entry in baseline["models"].values():
        assert set(entry["figures"]) == set(entry["tolerance"])
        assert {"commit", "date", "config", "derivation"} <= set(entry)


# --- entries and figures the gate cannot judge (issues 18 and 20) ------------------------------


def baseline_without(key: str, metric: str | None = None) -> dict:
    baseline = copy.deepcopy(BASELINE)
    if metric:
        del baseline["models"]["tiny"][key][metric]
    else:
        del baseline["models"]["tiny"][key]
    return baseline


@pytest.mark.parametrize(("key", "metric"), [("tolerance", None), ("tolerance", "f_avg/b"), ("figures", None)])
def test_a_baseline_entry_missing_a_tolerance_or_figures_cannot_start_the_gate(key, metric):
    with pytest.raises(GateError, match=f"has no '{metric or key}'") as raised:
        compare(METRICS, baseline_without(key, metric))
    assert raised.value.exit_code == 2


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 1.5])
def test_a_baseline_figure_that_is_not_a_figure_is_never_judged(value):
    baseline = copy.deepcopy(BASELINE)
    baseline["models"]["tiny"]["figures"]["macro_f_avg"] = value
    with pytest.raises(GateError, match="not a figure in") as raised:
        compare(METRICS, baseline)
    assert raised.value.exit_code == 2


def test_an_undefined_figure_in_the_metrics_is_not_judged():
    with pytest.raises(GateError, match="'macro_f_avg' is undefined") as raised:
        compare(with_changes(macro_f_avg=None), BASELINE)
    assert raised.value.exit_code == 1


def test_script_refuses_an_entry_without_tolerance_with_one_line_and_exit_2(tmp_path):
    metrics = write(tmp_path / "metrics.json", METRICS)
    baseline = write(tmp_path / "baseline.json", baseline_without("tolerance"))
    result = gate(f"metrics={metrics}", f"baseline={baseline}")
    assert result.returncode == 2, result.stderr
    assert (
        result.stderr.startswith("error: baseline: models.tiny: has no 'tolerance'") and result.stderr.count("\n") == 1
    )


def test_script_refuses_a_nan_baseline_figure_instead_of_reporting_a_fall(tmp_path):
    metrics = write(tmp_path / "metrics.json", METRICS)
    baseline = write(tmp_path / "baseline.json", json.dumps(BASELINE).replace("0.6,", "NaN,", 1))
    result = gate(f"metrics={metrics}", f"baseline={baseline}")
    assert result.returncode == 2 and "not a figure in [0, 1]" in result.stderr and "FAIL" not in result.stdout


def test_script_refuses_to_judge_an_undefined_macro_f_avg(tmp_path):
    metrics = write(tmp_path / "metrics.json", with_changes(macro_f_avg=None))
    result = gate(f"metrics={metrics}", f"baseline={write(tmp_path / 'b.json', BASELINE)}")
    assert result.returncode == 1 and "'macro_f_avg' is undefined" in result.stderr and "passed" not in result.stdout


def test_script_exits_2_for_a_model_without_an_entry_as_the_quality_gate_does(tmp_path):
    metrics = write(tmp_path / "metrics.json", METRICS)
    result = gate(f"metrics={metrics}", f"baseline={write(tmp_path / 'b.json', {'models': {}})}", "entry=tfidf")
    assert result.returncode == 2 and "no entry for model 'tfidf'" in result.stderr


def test_script_never_appends_its_summary_to_an_input(tmp_path):
    metrics = write(tmp_path / "metrics.json", METRICS)
    baseline = write(tmp_path / "baseline.json", BASELINE)
    before = baseline.read_text()
    result = gate(f"metrics={metrics}", f"baseline={baseline}", f"summary_file={baseline}")
    assert result.returncode == 2 and "is the input" in result.stderr and baseline.read_text() == before
