"""The batch labeller end to end on small fixtures: inputs good and bad, records and summaries,
resume after a kill, no overwrite, every output format, fp32 equal to the stock model."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from diplostance import labelling
from diplostance.baseline import TfidfStanceModel
from diplostance.labelling import (
    LabellingError,
    LabelOptions,
    OutputExistsError,
    discover_inputs,
    expand_output_shorthand,
    label,
    local,
    output_paths,
)
from diplostance.predictors import ModelFolderError
from diplostance.schema import LabelSpace
from diplostance.text import TextNormalization, normalize
from tests.conftest import PROB_TOL, ROOT, SAFETY_TIMEOUT_S, approx_floats, compose_config

FIXTURES = Path(__file__).parent / "fixtures" / "label"
GOOD, BAD = FIXTURES / "articles", FIXTURES / "bad"
GOOD_DOCS = {"un_rules", "bilateral_talks", "news-001", "2", "mixed-1", "mixed-4"}
EXPECTED_ERRORS = {  # (file name, line) -> a phrase of the reason
    ("binary.txt", None): "binary file",
    ("empty.txt", None): "empty file",
    ("latin1.txt", 2): "not UTF-8",
    ("mixed.jsonl", 2): "not JSON",
    ("mixed.jsonl", 3): "no 'text' field",
    ("mixed.jsonl", 5): "not UTF-8",
}


def run_label(model_dir, inputs, out: Path, fmt: str | None = None, **options):
    """The library entry with the options scripts/label.py would pass."""
    output = {"path": str(out), "format": fmt}
    cfg = {"model_dir": str(model_dir), "inputs": [str(i) for i in inputs], "output": output, "progress_bar": False}
    return label({**cfg, **options})


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def script(*overrides: str, tmp_path: Path, **popen) -> subprocess.Popen:
    command = [sys.executable, str(ROOT / "scripts" / "label.py"), *overrides, f"hydra.run.dir={tmp_path / 'hydra'}"]
    return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


@pytest.fixture(scope="module")
def mixed_run(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("mixed") / "OUT.jsonl"
    summary = run_label(tiny_model_dir, [GOOD, BAD], out)
    return summary, out


@pytest.fixture(scope="module")
def tfidf_dir(tmp_path_factory) -> Path:
    """A real tfidf model folder, fitted in a second on part of the corpus."""
    labels = LabelSpace(("un_treaty", "multistakeholder", "bilateral_cbm"), ("favor", "against", "none"))
    records = read_jsonl(ROOT / "annotations" / "corpus" / "batch_01.jsonl")
    rows = [labels.encode(r["stances"]) for r in records]
    options = yaml.safe_load((ROOT / "configs" / "model" / "tfidf.yaml").read_text())["tfidf"]
    model = TfidfStanceModel.fit([r["text"] for r in records], rows, labels, {**options, "min_df": 1})
    model_dir = tmp_path_factory.mktemp("tfidf") / "model"
    model.save(model_dir)
    TextNormalization().save(model_dir)
    return model_dir


# ---------------------------------------------------------------------------- inputs and records


def test_mixed_inputs_label_every_good_article_and_report_every_bad_one(mixed_run):
    summary, out = mixed_run
    assert (summary.counts.articles, summary.counts.failed) == (len(GOOD_DOCS), len(EXPECTED_ERRORS))
    errors = read_jsonl(out.with_name("OUT.errors.jsonl"))
    assert {(Path(e["file"]).name, e["line"]): e["reason"] for e in errors}.keys() == EXPECTED_ERRORS.keys()
    for error in errors:
        assert EXPECTED_ERRORS[Path(error["file"]).name, error["line"]] in error["reason"]
    assert {d["doc_id"] for d in read_jsonl(out.with_name("OUT.docs.jsonl"))} == GOOD_DOCS
    assert not out.with_name("OUT.partial").exists()


def test_records_carry_offsets_into_the_article_and_a_distribution_per_target(mixed_run, tiny_model_dir):
    summary, out = mixed_run
    records = read_jsonl(out)
    assert len(records) == summary.counts.sentences
    labels = LabelSpace.from_id2label(json.loads((tiny_model_dir / "config.json").read_text())["id2label"])
    article = (GOOD / "un_rules.txt").read_text(encoding="utf-8")
    own = [r for r in records if r["doc_id"] == "un_rules"]
    assert [r["sent_idx"] for r in own] == list(range(len(own))) and len(own) == 6
    for record in own:
        assert article[record["start"] : record["end"]] == record["text"]
    for record in records:
        assert set(record) == {"doc_id", "source", "sent_idx", "start", "end", "text", "stances", "probs", "holders"}
        assert set(record["holders"]) == {t for t, p in record["stances"].items() if p != "none"}  # holders.json
        for target in labels.targets:
            probs = record["probs"][target]
            assert list(probs) == list(labels.polarities) and sum(probs.values()) == pytest.approx(1, abs=1e-5)
            assert record["stances"][target] == max(probs, key=probs.get)
    jsonl_article = [r for r in records if r["doc_id"] == "2"]  # split at the line break inside "text"
    assert [r["text"] for r in jsonl_article] == [
        "رحب الرئيسان بتبادل الضمانات في مجال أمن المعلومات.",
        "وأعلنا عن جولة جديدة من المشاورات الثنائية الشهر المقبل.",
    ]


def test_document_summaries_count_stances_and_name_the_dominant_side(mixed_run):
    _, out = mixed_run
    records = read_jsonl(out)
    for doc in read_jsonl(out.with_name("OUT.docs.jsonl")):
        own = [r for r in records if r["doc_id"] == doc["doc_id"]]
        assert doc["sentences"] == len(own)
        for target, profile in doc["targets"].items():
            stances = [r["stances"][target] for r in own]
            assert profile["counts"] == {p: stances.count(p) for p in profile["counts"]}
            mean = {p: np.mean([r["probs"][target][p] for r in own]) for p in profile["mean_probs"]}
            assert profile["mean_probs"] == pytest.approx(mean, abs=1e-5)
            sided = {p: n for p, n in profile["counts"].items() if p != "none" and n}
            if sided:
                assert profile["dominant"] in sided and sided[profile["dominant"]] == max(sided.values())
                assert profile["share"] == pytest.approx(sided[profile["dominant"]] / len(own), abs=1e-4)
            else:
                assert (profile["dominant"], profile["share"]) == (None, 0.0)


def test_dominant_stance_breaks_ties_by_mean_probability():
    labels = LabelSpace(("t",), ("favor", "against", "none"))
    probs = np.array([[[0.6, 0.3, 0.1]], [[0.2, 0.7, 0.1]], [[0.1, 0.1, 0.8]]], dtype=np.float32)
    profile = labelling.doc_summary(labelling.Article("d", "x", "f"), probs, labels)["targets"]["t"]
    assert profile["counts"] == {"favor": 1, "against": 1, "none": 1}
    assert (profile["dominant"], profile["share"]) == ("against", pytest.approx(1 / 3, abs=1e-4))


def test_discovery_expands_folders_and_globs_once_each_and_reports_what_matches_nothing(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("a/1.txt", "a/2.jsonl", "a/.hidden.txt", "a/notes.md", "b.txt"):
        (tmp_path / name).write_text("x", encoding="utf-8")
    sources = discover_inputs(
        [tmp_path / "a", str(tmp_path / "*.txt"), tmp_path / "a" / "1.txt", tmp_path / "nope", str(tmp_path / "*.csv")],
        exclude=[tmp_path / "b.txt"],
    )
    found = [(Path(s.path).name, s.kind) for s in sources]
    assert found == [
        ("1.txt", "txt"),
        ("2.jsonl", "jsonl"),
        ("notes.md", "error"),
        ("nope", "error"),
        ("*.csv", "error"),
    ]
    assert "unsupported file type" in sources[2].problem and "matches no files" in sources[4].problem


def test_jsonl_field_names_are_options(tiny_model_dir, tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"key": "k1", "body": "جملة أولى. جملة ثانية."}) + "\n")
    summary = run_label(tiny_model_dir, [tmp_path / "in.jsonl"], tmp_path / "OUT.jsonl", jsonl_id_field="key",
                        jsonl_text_field="body")  # fmt: skip
    assert (summary.counts.articles, summary.counts.sentences) == (1, 2)
    assert {r["doc_id"] for r in read_jsonl(tmp_path / "OUT.jsonl")} == {"k1"}


# ---------------------------------------------------------------------------- models and precision


def test_fp32_predicts_exactly_what_the_stock_model_predicts(mixed_run, tiny_model_dir):
    _, out = mixed_run
    records = read_jsonl(out)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir).eval()
    labels = LabelSpace.from_id2label(model.config.id2label)
    options = TextNormalization.load(tiny_model_dir)
    for record in records:  # one sentence at a time: no padding, the stock arithmetic
        encoded = tokenizer(normalize(record["text"], options), truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            logits = model(**encoded).logits.view(len(labels.targets), len(labels.polarities))
        stock = torch.softmax(logits, -1).numpy()
        ours = np.array([[record["probs"][t][p] for p in labels.polarities] for t in labels.targets])
        assert ours == pytest.approx(stock, abs=PROB_TOL)  # padding and batch shape move the last digits
        assert [labels.polarities[i] for i in stock.argmax(-1)] == [record["stances"][t] for t in labels.targets]


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_reduced_precision_runs_give_the_same_record_shape(tiny_model_dir, tmp_path, precision):
    summary = run_label(tiny_model_dir, [GOOD], tmp_path / "OUT.jsonl", precision=precision)
    records = read_jsonl(tmp_path / "OUT.jsonl")
    assert summary.counts.sentences == len(records) > 0 and set(records[0]["probs"]) == set(records[0]["stances"])


def test_a_tfidf_model_folder_labels_the_same_inputs(tfidf_dir, tmp_path):
    from diplostance.predictors.tfidf import TfidfPredictor

    summary = run_label(tfidf_dir, [GOOD], tmp_path / "OUT.jsonl")
    records = read_jsonl(tmp_path / "OUT.jsonl")
    assert summary.counts.articles == 4 and len(records) == summary.counts.sentences
    predictor = TfidfPredictor(tfidf_dir)
    expected = predictor.predict_proba([r["text"] for r in records]).argmax(-1)
    got = [[predictor.labels.polarities.index(r["stances"][t]) for t in predictor.labels.targets] for r in records]
    assert np.array_equal(expected, got)


def _break(model_dir: Path, how: str) -> None:
    if how == "no text_processing.json":
        (model_dir / "text_processing.json").unlink()
    elif how == "no targets":
        config = json.loads((model_dir / "config.json").read_text())
        config.pop("id2label")
        (model_dir / "config.json").write_text(json.dumps(config))
    elif how == "no weights":
        (model_dir / "model.safetensors").unlink()
    elif how == "tfidf without targets":
        config = json.loads((model_dir / "tfidf_config.json").read_text())
        config.pop("targets")
        (model_dir / "tfidf_config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("not a folder", "not a folder"),
        ("no text_processing.json", "text_processing.json is missing"),
        ("no targets", "targets cannot be read"),
        ("no weights", "no weights file"),
        ("tfidf without targets", "targets cannot be read"),
    ],
)
def test_an_unusable_model_folder_fails_clearly_before_any_work(tiny_model_dir, tfidf_dir, tmp_path, how, message):
    import shutil

    model_dir = tmp_path / "model"
    if how != "not a folder":
        shutil.copytree(tfidf_dir if how.startswith("tfidf") else tiny_model_dir, model_dir)
        _break(model_dir, how)
    with pytest.raises(ModelFolderError, match=message):
        run_label(model_dir, [tmp_path / "no-such-input"], tmp_path / "out" / "OUT.jsonl")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---------------------------------------------------------------------------- outputs


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_csv_and_parquet_hold_the_same_records_flattened(mixed_run, tiny_model_dir, tmp_path, fmt):
    _, reference = mixed_run
    summary = run_label(tiny_model_dir, [GOOD, BAD], tmp_path / "OUT.jsonl", fmt=fmt)
    assert summary.paths.records == tmp_path / f"OUT.{fmt}" and not (tmp_path / "OUT.jsonl").exists()
    assert (tmp_path / "OUT.docs.jsonl").is_file() and (tmp_path / "OUT.errors.jsonl").is_file()
    path = summary.paths.records
    table = pd.read_csv(path, keep_default_na=False) if fmt == "csv" else pd.read_parquet(path)
    expected = read_jsonl(reference)
    assert list(table["doc_id"].astype(str)) == [r["doc_id"] for r in expected]
    assert list(table["text"]) == [r["text"] for r in expected]
    assert list(table["stance.un_treaty"]) == [r["stances"]["un_treaty"] for r in expected]
    got = table["prob.bilateral_cbm.favor"].to_numpy(dtype=float)
    assert got == pytest.approx([r["probs"]["bilateral_cbm"]["favor"] for r in expected], abs=PROB_TOL)


def test_output_shorthand_and_format_override_compose_as_written(tmp_path):
    overrides = expand_output_shorthand(["model_dir=M", "inputs=[a.txt]", "output=OUT.jsonl", "output.format=csv"])
    options = LabelOptions.from_config(compose_config("label", overrides))
    assert options.output.records == Path("OUT.csv") and options.output.docs == Path("OUT.docs.jsonl")
    assert output_paths("res/OUT.parquet").format == "parquet"
    assert output_paths("res/OUT.jsonl").work == Path("res/OUT.partial")
    with pytest.raises(LabellingError, match="missing required"):
        LabelOptions.from_config(compose_config("label", ["model_dir=M"]))


def test_a_finished_output_is_never_overwritten_unless_asked(mixed_run, tiny_model_dir, tmp_path):
    out = tmp_path / "OUT.jsonl"
    run_label(tiny_model_dir, [GOOD], out)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(OutputExistsError, match="overwrite=true"):
        run_label(tiny_model_dir, [GOOD, BAD], out)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    summary = run_label(tiny_model_dir, [GOOD, BAD], out, overwrite=True)
    assert summary.counts.failed == len(EXPECTED_ERRORS) and read_jsonl(out) == approx_floats(read_jsonl(mixed_run[1]))


def test_a_crash_mid_window_resumes_without_duplicates(tiny_model_dir, tmp_path, monkeypatch):
    """Deterministic version of the kill test: the crash leaves half a record after the checkpoint."""
    inputs = [GOOD, BAD]
    reference = tmp_path / "ref" / "OUT.jsonl"
    run_label(tiny_model_dir, inputs, reference, window_sentences=3)
    real, calls = local._write_window, []

    def crash_on_third_window(window, probs, streams, labels, *holders):
        calls.append(1)
        if len(calls) == 3:
            streams.handles["records"].write(b'{"doc_id": "half a rec')
            streams.handles["records"].flush()
            raise KeyboardInterrupt
        real(window, probs, streams, labels, *holders)

    out = tmp_path / "run" / "OUT.jsonl"
    monkeypatch.setattr(local, "_write_window", crash_on_third_window)
    with pytest.raises(KeyboardInterrupt):
        run_label(tiny_model_dir, inputs, out, window_sentences=3)
    assert (tmp_path / "run" / "OUT.partial" / "state.json").is_file() and not out.exists()
    monkeypatch.setattr(local, "_write_window", real)
    with pytest.raises(LabellingError, match="other settings"):  # a different command does not take it over
        run_label(tiny_model_dir, inputs, out, window_sentences=3, precision="int8")
    summary = run_label(tiny_model_dir, inputs, out, window_sentences=3)
    assert summary.resumed
    for name in ("OUT.jsonl", "OUT.docs.jsonl", "OUT.errors.jsonl"):
        assert read_jsonl(out.parent / name) == approx_floats(read_jsonl(reference.parent / name))


def test_a_run_killed_while_finishing_completes_on_the_next_run(mixed_run, tiny_model_dir, tmp_path, monkeypatch):
    real = local.convert_records

    def crash(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "convert_records", crash)
    with pytest.raises(KeyboardInterrupt):
        run_label(tiny_model_dir, [GOOD, BAD], tmp_path / "OUT.jsonl", fmt="csv")
    assert not (tmp_path / "OUT.csv").exists() and (tmp_path / "OUT.partial").is_dir()
    monkeypatch.setattr(local, "convert_records", real)
    summary = run_label(tiny_model_dir, [GOOD, BAD], tmp_path / "OUT.jsonl", fmt="csv")
    assert summary.resumed and summary.counts.sentences == mixed_run[0].counts.sentences
    assert len(pd.read_csv(tmp_path / "OUT.csv")) == summary.counts.sentences
    assert not (tmp_path / "OUT.partial").exists()


def test_a_second_concurrent_run_on_the_same_output_is_refused(tiny_model_dir, tmp_path):
    with local._locked(tmp_path / "OUT.partial"), pytest.raises(LabellingError, match="another labelling run"):
        run_label(tiny_model_dir, [GOOD], tmp_path / "OUT.jsonl")


def _articles(path: Path, n: int, seed: int = 0) -> None:
    texts = [r["text"] for f in sorted((ROOT / "annotations" / "corpus").glob("*.jsonl")) for r in read_jsonl(f)]
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for i in range(n):
            handle.write(json.dumps({"id": f"a{i:04d}", "text": " ".join(rng.sample(texts, 5))}, ensure_ascii=False))
            handle.write("\n")


def _checkpointed(state: Path) -> bool:
    try:
        return json.loads(state.read_text())["next_item"] != [0, 0]
    except (OSError, ValueError):
        return False


@pytest.mark.slow  # two runs of the command (~25 s); test_a_crash_mid_window_... covers the same in-process
def test_killed_run_resumes_and_holds_every_sentence_exactly_once(tiny_model_dir, tmp_path):
    _articles(tmp_path / "in.jsonl", 240)
    args = [f"model_dir={tiny_model_dir}", f"inputs=[{tmp_path / 'in.jsonl'},{BAD}]", "window_sentences=8"]
    out = tmp_path / "run" / "OUT.jsonl"
    first = script(*args, f"output={out}", "progress_bar=false", tmp_path=tmp_path)
    state = out.with_name("OUT.partial") / "state.json"
    deadline = time.monotonic() + SAFETY_TIMEOUT_S
    while not _checkpointed(state) and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    assert first.returncode == -signal.SIGKILL, first.stderr.read()
    assert state.is_file() and not out.exists(), "the run finished before it could be killed"

    second = script(*args, f"output={out}", "allow_errors=true", "progress_bar=false", tmp_path=tmp_path)
    stdout, stderr = second.communicate(timeout=SAFETY_TIMEOUT_S)
    assert second.returncode == 0, stderr
    assert "resumed" in stdout and stdout.strip().splitlines()[-1].startswith("failed: 6 input(s)")

    reference = tmp_path / "ref" / "OUT.jsonl"
    run_label(tiny_model_dir, [tmp_path / "in.jsonl", BAD], reference, window_sentences=8)
    records = read_jsonl(out)
    keys = [(r["doc_id"], r["sent_idx"]) for r in records]
    assert len(keys) == len(set(keys)) and records == approx_floats(read_jsonl(reference))
    docs = read_jsonl(reference.with_name("OUT.docs.jsonl"))
    assert read_jsonl(out.with_name("OUT.docs.jsonl")) == approx_floats(docs)
    assert read_jsonl(out.with_name("OUT.errors.jsonl")) == read_jsonl(reference.with_name("OUT.errors.jsonl"))


def test_the_command_exits_non_zero_on_failed_inputs_and_ends_with_the_counts(tiny_model_dir, tmp_path):
    run = script(f"model_dir={tiny_model_dir}", f"inputs=[{GOOD},{BAD}]", "output=OUT.jsonl", "output.format=csv",
                 tmp_path=tmp_path)  # fmt: skip
    stdout, stderr = run.communicate(timeout=SAFETY_TIMEOUT_S)
    assert run.returncode == 1, stderr
    last = stdout.strip().splitlines()[-2:]
    assert last[0].startswith(f"labelled {len(GOOD_DOCS)} articles") and last[1].startswith("failed: 6 input(s)")
    assert (tmp_path / "OUT.csv").is_file() and not (tmp_path / "OUT.jsonl").exists()
    again = script(f"model_dir={tiny_model_dir}", f"inputs=[{GOOD}]", "output=OUT.csv", tmp_path=tmp_path)
    _, stderr = again.communicate(timeout=SAFETY_TIMEOUT_S)
    assert again.returncode == 2 and "already exist" in stderr


# ---------------------------------------------------------------------------- inputs are never outputs (issue 9)


def test_an_output_that_is_an_input_or_inside_an_input_folder_is_refused_before_any_work(tiny_model_dir, tmp_path):
    news = tmp_path / "news.jsonl"
    news.write_text(json.dumps({"id": "n1", "text": "جملة أولى. جملة ثانية."}) + "\n", encoding="utf-8")
    before = news.read_bytes()
    run = script(f"model_dir={tiny_model_dir}", "inputs=[news.jsonl]", "output=news.jsonl", "overwrite=true",
                 tmp_path=tmp_path)  # fmt: skip
    _, stderr = run.communicate(timeout=SAFETY_TIMEOUT_S)
    assert run.returncode == 2 and news.read_bytes() == before
    assert stderr.strip().splitlines()[-1].startswith("error: output") and "is the input file" in stderr
    with pytest.raises(LabellingError, match="inside the input folder"):
        run_label(tiny_model_dir, [GOOD], GOOD / "nested" / "OUT.jsonl")
    assert not (GOOD / "nested" / "OUT.partial").exists()


def test_records_name_their_source_so_equal_doc_ids_from_two_inputs_stay_apart(tiny_model_dir, tmp_path):
    for name in ("a.jsonl", "b.jsonl"):
        (tmp_path / name).write_text(json.dumps({"id": "same", "text": "جملة أولى. جملة ثانية."}) + "\n")
    run_label(tiny_model_dir, [tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "out" / "OUT.jsonl")
    records = read_jsonl(tmp_path / "out" / "OUT.jsonl")
    keys = {(r["source"], r["doc_id"], r["sent_idx"]) for r in records}
    assert len(keys) == len(records) == 4
    assert {r["source"] for r in records} == {f"{tmp_path / 'a.jsonl'}:1", f"{tmp_path / 'b.jsonl'}:1"}


def test_dangling_and_looping_symlinks_in_an_input_folder_are_reported_not_skipped(tiny_model_dir, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "good.txt").write_text("جملة أولى. جملة ثانية.", encoding="utf-8")
    (folder / "dangling.txt").symlink_to(tmp_path / "gone.txt")
    (folder / "loop.txt").symlink_to(folder / "loop.txt")
    summary = run_label(tiny_model_dir, [folder], tmp_path / "OUT.jsonl")
    errors = {Path(e["file"]).name: e["reason"] for e in read_jsonl(tmp_path / "OUT.errors.jsonl")}
    assert summary.counts.articles == 1 and summary.counts.failed == 2
    assert "dangling symbolic link" in errors["dangling.txt"] and "symbolic link loop" in errors["loop.txt"]
