"""Issue 19, point 1: a report on the user's own data (data=file) does not claim the text is composed."""

from diplostance.training import train
from tests.conftest import FIXTURES, compose_config

OWN = FIXTURES / "own_data"


def own_data_report(tmp_path, *overrides: str) -> str:
    data = [f"data.train={OWN / 'mawqif_like_Train.csv'}", f"data.test={OWN / 'mawqif_like_Test.csv'}"]
    train(compose_config("train", ["model=tfidf", "data=file", "bootstrap_resamples=0", *data, *overrides]), tmp_path)
    return (tmp_path / "report.md").read_text(encoding="utf-8")


def test_a_report_on_a_users_file_does_not_warn_that_the_text_is_composed(tmp_path):
    report = own_data_report(tmp_path)
    assert "(external: 18)" in report
    assert "no real text" not in report and "composed sentences overstate" not in report


def test_a_file_that_says_it_is_composed_gets_the_warning(tmp_path):
    report = own_data_report(tmp_path, "data.source=composed")
    assert "**Warning:** the test data has no real text" in report
