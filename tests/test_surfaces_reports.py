"""Reports and `compare` say "undefined" for an undefined figure and give one line for a folder they cannot read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diplostance import cli
from diplostance.reports import per_label_table, summary_table

LABELS = {"favor": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}}
UNDEFINED = {
    "macro_f_avg": None,
    "macro_f1": 0.3,
    "num_examples": 4,
    "targets": {"a": {"f_avg": None, "macro_f1": 0.3, "labels": LABELS}},
}
DEFINED = {
    "macro_f_avg": 0.5,
    "macro_f1": 0.4,
    "num_examples": 4,
    "targets": {"a": {"f_avg": 0.5, "macro_f1": 0.4, "labels": LABELS}},
}


def run_folder(root: Path, name: str, metrics) -> Path:
    (root / name).mkdir(parents=True)
    text = metrics if isinstance(metrics, str) else json.dumps(metrics)
    (root / name / "metrics.json").write_text(text, encoding="utf-8")
    return root / name


def test_the_report_tables_say_undefined_not_zero():
    assert "macro_f_avg undefined" in per_label_table(UNDEFINED)
    assert "f_avg undefined" in per_label_table(UNDEFINED)
    assert "| run | undefined | – | undefined | 0.300 |" in summary_table({"run": UNDEFINED})


def test_compare_lists_an_undefined_run_last_and_says_so(tmp_path, capsys):
    run_folder(tmp_path, "r-undefined", UNDEFINED)
    run_folder(tmp_path, "r-defined", DEFINED)
    assert cli.main(["compare", str(tmp_path)]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| r-")]
    assert [row.split(" | ")[0] for row in rows] == ["| r-defined", "| r-undefined"]
    assert "| undefined | undefined |" in rows[1]


@pytest.mark.parametrize(
    ("make", "code", "message"),
    [
        (lambda root: None, 2, "no run folder with a metrics.json"),
        (lambda root: run_folder(root, "r1", "{not json"), 1, "not a readable metrics.json"),
    ],
)
def test_compare_reports_an_unreadable_folder_in_one_line(tmp_path, capsys, make, code, message):
    make(tmp_path)
    with pytest.raises(SystemExit) as stop:
        cli.main(["compare", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == code and err.startswith("error: ") and message in err and err.count("\n") == 1
