"""Issue 9, case by case: no input lost, no bad input passing silently, no traceback for a user error.

Each test names the issue's case it covers. Entry points run as the user runs them (subprocesses);
library functions are called directly where the entry point adds nothing.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diplostance.annotations import load_corpus
from diplostance.data import DataError, load_file_data
from diplostance.predictors import ModelFolderError, check_model_folder
from diplostance.regression import GateError, compare
from diplostance.text import split_sentences
from diplostance.training import TrainingError, train
from tests.conftest import FAST_TINY, FIXTURES, ROOT, SAFETY_TIMEOUT_S, compose_config
from tests.splitter_reference import split_sentences as split_sentences_before

DATA = FIXTURES / "data"


def run(*args: str, preexec_fn=None, env: dict | None = None) -> subprocess.CompletedProcess:
    """An entry point as a user runs it: `scripts/NAME.py ...` or `-m diplostance ...`."""
    command = [
        sys.executable,
        *(["-m", *args[1:]] if args[0] == "-m" else [str(ROOT / "scripts" / args[0]), *args[1:]]),
    ]
    environment = {k: v for k, v in os.environ.items() if k != "DIPLOSTANCE_DEBUG"} | (env or {})
    return subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=SAFETY_TIMEOUT_S,
        preexec_fn=preexec_fn,
        env=environment,
    )


def assert_user_error(result: subprocess.CompletedProcess, code: int, *phrases: str) -> None:
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[-2000:]


def file_config(*overrides: str):
    return compose_config("train", ["data=file", *overrides]).data


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------- case 2: incomplete model folders


def test_case2_model_folder_without_tokenizer_json_is_refused_before_evaluation(tiny_model_dir, tmp_path):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (broken / "tokenizer.json").unlink()
    result = run("evaluate.py", f"model_dir={broken}", f"hydra.run.dir={tmp_path / 'eval'}", "bootstrap_resamples=0")
    assert_user_error(result, 2, "no tokenizer vocabulary", "incomplete")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_case2_weights_that_do_not_match_the_labels_are_refused(tiny_model_dir, tmp_path):
    broken = shutil.copytree(tiny_model_dir, tmp_path / "model")
    config = json.loads((broken / "config.json").read_text())
    config["id2label"] = {str(i): label for i, label in enumerate(["t=favor", "t=against"])}
    config["label2id"] = {label: int(i) for i, label in config["id2label"].items()}
    config.pop("num_labels", None)
    (broken / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="output layer"):
        check_model_folder(broken)


# ---------------------------------------------------------------- case 3: run folders


def test_case3_a_finished_run_folder_is_never_reused_without_overwrite(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    finished = write(run_dir / "metrics.json", '{"macro_f_avg": 0.5}\n')
    result = run("train.py", "model=tfidf", f"hydra.run.dir={run_dir}")
    assert_user_error(result, 2, "holds a finished run", "overwrite=true")
    assert finished.read_text() == '{"macro_f_avg": 0.5}\n'
    assert not (run_dir / ".hydra").exists()  # refused before Hydra wrote anything into it


RUN_DIR_OF_A_NEW_PROCESS = f"""
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
import diplostance.outputs  # what scripts/train.py imports: the ${{run_id:}} resolver
with initialize_config_dir(config_dir="{ROOT / "configs"}", version_base="1.3"):
    print(OmegaConf.select(compose("train", return_hydra_config=True), "hydra.run.dir"))
"""


def test_case3_runs_started_together_get_different_folders():
    command = [sys.executable, "-c", RUN_DIR_OF_A_NEW_PROCESS]
    processes = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    first, second = (process.communicate(timeout=SAFETY_TIMEOUT_S)[0].strip() for process in processes)
    assert first.startswith("outputs/train/") and second.startswith("outputs/train/")
    assert first != second  # even when both started in the same second


# ---------------------------------------------------------------- case 4: conflicting labels


@pytest.mark.parametrize(
    ("name", "content", "overrides"),
    [
        ("long.csv", "text,target,stance\nجملة,t,favor\nأخرى,t,none\nجملة,t,against\n", []),
        ("long_id.csv", "id,text,target,stance\n1,جملة,t,favor\n2,جملة,t,against\n", ["data.columns.id=id"]),
        (
            "wide.jsonl",
            '{"text": "جملة", "stances": {"t": "favor"}}\n{"text": "جملة", "stances": {"t": "against"}}\n',
            ["data.format=jsonl", "data.layout=wide"],
        ),
    ],
)
def test_case4_the_same_sentence_with_conflicting_labels_is_an_error(tmp_path, name, content, overrides):
    path = write(tmp_path / name, content)
    with pytest.raises(DataError, match="conflicting labels") as error:
        load_file_data(file_config(f"data.train={path}", "data.dev_fraction=0", *overrides))
    assert error.value.exit_code == 1


def test_case4_a_repeated_sentence_with_the_same_labels_is_a_warning(tmp_path):
    path = write(tmp_path / "train.csv", "text,target,stance\nجملة,t,favor\nأخرى,t,none\nجملة,t,favor\n")
    data = load_file_data(file_config(f"data.train={path}", "data.dev_fraction=0"))
    assert len(data.splits["train"]) == 2
    assert any("line 4 repeats line 2" in w for w in data.warnings)


# ---------------------------------------------------------------- case 5: targets without training data


def test_case5_a_target_only_in_the_test_file_is_left_out_with_a_warning(tmp_path):
    train_rows = "".join(f"جملة رقم {i},t,{('favor', 'against', 'none')[i % 3]}\n" for i in range(9))
    train_file = write(tmp_path / "train.csv", "text,target,stance\n" + train_rows)
    test_file = write(tmp_path / "test.csv", "text,target,stance\nجملة,t,favor\nجملة,only_test,against\n")
    data = load_file_data(file_config(f"data.train={train_file}", f"data.test={test_file}", "data.dev_fraction=0"))
    assert data.labels.targets == ("t",)
    assert any("'only_test' is annotated only outside the training data" in w for w in data.warnings)


def test_case5_a_one_off_target_is_warned_about_and_the_report_repeats_it(tmp_path):
    rows = "".join(f"جملة رقم {i},t,{('favor', 'against', 'none')[i % 3]}\n" for i in range(12))
    train_file = write(tmp_path / "train.csv", "text,target,stance\n" + rows + "جملة رقم 3,7,favor\n")
    cfg = compose_config(
        "train",
        ["model=tfidf", "data=file", f"data.train={train_file}", f"data.test={train_file}", "bootstrap_resamples=0"],
    )
    metrics = train(cfg, tmp_path / "run")
    warning = next(w for w in metrics["warnings"] if "target '7' has only 1 annotated training row" in w)
    assert "line 14" in warning
    assert warning in json.loads((tmp_path / "run" / "metrics.json").read_text())["warnings"]
    assert warning in (tmp_path / "run" / "report.md").read_text()


# ---------------------------------------------------------------- case 6: linear-time splitter


def test_case6_the_linear_splitter_gives_the_same_sentences_as_before_on_the_seeds():
    for path in sorted((ROOT / "seeds").glob("*.txt")):
        text = path.read_text(encoding="utf-8")
        assert split_sentences(text) == split_sentences_before(text), path.name
        assert split_sentences(text * 3) == split_sentences_before(text * 3), path.name


SPLITTER_ALPHABET = st.sampled_from([*"ابت ثج د.أم U.S Dr 3.5 ؟?!؛;…\"'«»“”‘’()\n\t_x", "..", ". ", "  "])


@settings(max_examples=300, deadline=None)
@given(st.lists(SPLITTER_ALPHABET, max_size=80).map("".join))
def test_case6_the_linear_splitter_gives_the_same_sentences_as_before_on_generated_text(text):
    assert split_sentences(text) == split_sentences_before(text)


# ---------------------------------------------------------------- case 8: the quality gate


def gate_metrics(macro: float, **targets: float) -> dict:
    return {"macro_f_avg": macro, "targets": {t: {"f_avg": v} for t, v in targets.items()}}


BASELINE = {
    "models": {
        "m": {"figures": {"macro_f_avg": 0.6, "f_avg/a": 0.6}, "tolerance": {"macro_f_avg": 0.05, "f_avg/a": 0.05}}
    }
}


@pytest.mark.parametrize(
    ("metrics", "message"),
    [
        (gate_metrics(math.inf, a=0.6), "not a figure in"),
        (gate_metrics(math.nan, a=0.6), "not a figure in"),
        (gate_metrics(0.6, a=0.6, extra=0.01), "not in the baseline entry"),
    ],
)
def test_case8_the_gate_refuses_metrics_it_cannot_judge(metrics, message):
    with pytest.raises(GateError, match=message):
        compare(metrics, BASELINE, "m")


def test_case8_check_regression_on_an_infinite_figure_fails_with_one_line(tmp_path):
    metrics = write(tmp_path / "metrics.json", '{"macro_f_avg": Infinity, "targets": {"a": {"f_avg": 0.6}}}')
    baseline = write(tmp_path / "baseline.json", json.dumps(BASELINE))
    result = run("check_regression.py", f"metrics={metrics}", f"baseline={baseline}", "entry=m")
    assert_user_error(result, 1, "'macro_f_avg' is inf")


# ---------------------------------------------------------------- case 9: a NaN loss


def test_case9_training_that_gives_a_nan_loss_stops_without_saving_a_model(tmp_path):
    train_file = write(tmp_path / "train.csv", "text,target,stance\nنص عن المعاهدة,t,favor\n")
    dev_file = write(tmp_path / "dev.csv", "text,target,stance\nنص ضد المعاهدة,t,against\n")
    overrides = [f"data.train={train_file}", f"data.dev={dev_file}", f"data.test={dev_file}", "model.vocab_size=200"]
    with pytest.raises(TrainingError, match="eval_loss nan"):
        train(compose_config("train", [*FAST_TINY, "data=file", *overrides]), tmp_path / "run")
    assert not (tmp_path / "run" / "model").exists()


# ---------------------------------------------------------------- case 10: the validator


def copy_annotations(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "seeds", tmp_path / "seeds")
    return shutil.copytree(ROOT / "annotations", tmp_path / "annotations")


@pytest.mark.parametrize(("text", "rule"), [("ج" * 5_000_001, "characters long"), ("نص\u0000آخر", "U+0000")])
def test_case10_the_validator_refuses_an_over_long_sentence_and_control_characters(tmp_path, text, rule):
    directory = copy_annotations(tmp_path)
    first = (directory / "seeds.jsonl").read_text(encoding="utf-8").splitlines()
    composed = next(p for p in sorted((directory / "corpus").glob("*.jsonl")))
    lines = composed.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    record["text"] = text
    lines[0] = json.dumps(record, ensure_ascii=False)
    composed.write_text("\n".join(lines) + "\n", encoding="utf-8")
    problems = [str(p) for p in load_corpus(directory).problems]
    assert any(f"{composed}:1: bad-text:" in p and rule in p for p in problems), problems[:5]
    assert first  # the seed file itself was left alone


# ---------------------------------------------------------------- tracebacks that are now one line


def test_validate_on_a_missing_folder_is_one_line(tmp_path):
    assert_user_error(run("-m", "diplostance", "validate", str(tmp_path / "nope")), 2, "no such annotation folder")


def test_validate_without_schema_is_one_line(tmp_path):
    directory = copy_annotations(tmp_path)
    (directory / "schema.yaml").unlink()
    assert_user_error(run("-m", "diplostance", "validate", str(directory)), 2, "schema file missing")


@pytest.mark.parametrize("schema", ["targets: 5\npolarities: [a]\n", "targets: [a\n", "- just a list\n"])
def test_validate_with_an_invalid_schema_is_one_line(tmp_path, schema):
    directory = copy_annotations(tmp_path)
    write(directory / "schema.yaml", schema)
    assert_user_error(run("-m", "diplostance", "validate", str(directory)), 1, "schema.yaml")


def test_validate_reports_a_non_utf8_line_and_reads_the_rest(tmp_path):
    directory = copy_annotations(tmp_path)
    with (directory / "seeds.jsonl").open("ab") as f:
        f.write(b'{"id": "\xff"}\n')
    result = run("-m", "diplostance", "validate", str(directory))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "not-utf8: byte 0xff" in result.stdout


@pytest.mark.parametrize("weights", ["model.safetensors", "tfidf.safetensors"])
def test_a_truncated_weights_file_is_refused_before_work(tiny_model_dir, small_tfidf_model_dir, tmp_path, weights):
    source = tiny_model_dir if weights == "model.safetensors" else small_tfidf_model_dir
    broken = shutil.copytree(source, tmp_path / "model")
    with (broken / weights).open("r+b") as f:
        f.truncate((broken / weights).stat().st_size // 2)
    result = run("evaluate.py", f"model_dir={broken}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert_user_error(result, 2, weights, "truncated")


def test_an_unwritable_run_folder_is_one_line(small_tfidf_model_dir):
    # /proc refuses new folders to every user, root included (a chmod'ed folder would not stop root).
    result = run("evaluate.py", f"model_dir={small_tfidf_model_dir}", "hydra.run.dir=/proc/1/diplostance-run")
    assert_user_error(result, 2, "/proc/1/diplostance-run: the run folder cannot be written")


def _file_size_limit(limit: int):
    def apply():  # writes past `limit` bytes fail with EFBIG, as on a full disk (SIGXFSZ ignored)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_one_line_and_leaves_no_partial_output(small_tfidf_model_dir, tmp_path):
    run_dir = tmp_path / "eval"
    data = [f"data.train={DATA / 'long_train.csv'}", f"data.test={DATA / 'long_test.csv'}", "data.columns.id=id"]
    result = run(
        "evaluate.py",
        f"model_dir={small_tfidf_model_dir}",
        "data=file",
        *data,
        f"hydra.run.dir={run_dir}",
        preexec_fn=_file_size_limit(10_000),  # Hydra's own files fit, the confusion plots do not
    )
    assert_user_error(result, 2, "File too large", str(run_dir))
    assert sorted(p.name for p in run_dir.iterdir()) == [".hydra", "evaluate.log"]


def test_a_header_only_csv_is_a_data_error(tmp_path):
    header = write(tmp_path / "train.csv", "text,target,stance\n")
    with pytest.raises(DataError, match="no data rows") as error:
        load_file_data(file_config(f"data.train={header}"))
    assert error.value.exit_code == 1


def test_a_tfidf_training_set_without_features_is_a_training_error(tmp_path):
    one = write(tmp_path / "one.csv", "text,target,stance\n؟؟,t,favor\n")
    overrides = [f"data.train={one}", f"data.dev={one}", f"data.test={one}", "data=file", "model=tfidf"]
    with pytest.raises(TrainingError, match="gives no features"):
        train(compose_config("train", [*overrides, "bootstrap_resamples=0"]), tmp_path / "run")


def test_check_regression_without_metrics_is_one_line():
    assert_user_error(run("check_regression.py"), 2, "'metrics' is required")


# ---------------------------------------------------------------- the general rules


def test_a_run_folder_inside_an_input_folder_is_refused(tmp_path):
    directory = copy_annotations(tmp_path)
    before = sorted(p.name for p in directory.iterdir())
    result = run("train.py", "model=tfidf", f"data.directory={directory}", f"hydra.run.dir={directory / 'run'}")
    assert_user_error(result, 2, "is inside the input")
    assert sorted(p.name for p in directory.iterdir()) == before


def test_verbose_shows_the_traceback_of_a_user_error():
    quiet = run("check_regression.py")
    verbose = run("check_regression.py", "--verbose")
    assert "Traceback" not in quiet.stderr
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr and "'metrics' is required" in verbose.stderr


def test_a_run_folder_given_as_model_dir_suggests_its_model_folder(tmp_path):
    from diplostance.predictors import ModelFolderError, check_model_folder

    (tmp_path / "model").mkdir()
    (tmp_path / "metrics.json").write_text("{}")
    with pytest.raises(ModelFolderError, match=r"did you mean .*model\?"):
        check_model_folder(tmp_path)


def test_a_jsonl_data_file_with_a_utf8_bom_is_read(tmp_path):
    from diplostance.data import read_table

    path = tmp_path / "train.jsonl"
    path.write_bytes('\ufeff{"id": "1", "text": "ندعم اتفاقية أممية"}\n{"id": "2", "text": "عقد الاجتماع"}\n'.encode())
    assert read_table(path, "jsonl")["id"].tolist() == ["1", "2"]
