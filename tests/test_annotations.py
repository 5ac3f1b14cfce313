"""Reading and validating annotation directories (diplostance.annotations, `diplostance validate`).

Each broken fixture is a tiny annotation directory built in tmp_path: the shipped
schema.yaml, a splits.yaml, one or two JSON Lines files and, for seed rules, a seeds/
folder beside it. Every problem is checked by rule, file (relative to the annotation
directory) and line.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from diplostance import cli
from diplostance.annotations import REQUIRED_FIELDS, Problem, load_corpus

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "annotations"

CORPUS = "corpus/batch.jsonl"
SEEDS = "seeds.jsonl"
SEED_ARTICLE = "تؤيد روسيا اتفاقية أممية.\nوتدعو إلى حوار ثنائي مع واشنطن.\n"
# The two sentences of SEED_ARTICLE as (start, end, text).
SEED_SENTENCES = [(0, 25, "تؤيد روسيا اتفاقية أممية."), (26, 57, "وتدعو إلى حوار ثنائي مع واشنطن.")]
PROBLEM_LINE = re.compile(r"^(?P<path>.+):(?P<line>\d+): (?P<rule>[a-z-]+): (?P<message>.+)$")


def composed(doc_id: str = "c1", sent_idx: int = 0, /, **fields) -> dict:
    """A valid composed record; keyword arguments override or add fields."""
    record = {
        "id": f"{doc_id}-{sent_idx}",
        "doc_id": doc_id,
        "sent_idx": sent_idx,
        "text": f"تدعو الدولة {doc_id} إلى اتفاقية أممية رقم {sent_idx}.",
        "stances": {"un_treaty": "favor", "multistakeholder": "none"},
        "source": "composed",
        "annotator": "tester",
        "rationale": "Calls for a UN convention.",
    }
    record.update(fields)
    return record


def seed(sentence: int, /, doc_id: str = "s1", **fields) -> dict:
    """A valid record of sentence `sentence` of SEED_ARTICLE; keyword arguments override."""
    sent_idx = sentence
    start, end, text = SEED_SENTENCES[sentence]
    record = {
        "id": f"{doc_id}-{sent_idx}",
        "doc_id": doc_id,
        "sent_idx": sent_idx,
        "text": text,
        "start": start,
        "end": end,
        "stances": {"un_treaty": "favor"},
        "source": "seed",
        "annotator": "tester",
    }
    record.update(fields)
    return record


def without(record: dict, *names: str) -> dict:
    return {k: v for k, v in record.items() if k not in names}


def write_jsonl(path: Path, lines: list[dict | str]) -> None:
    """Dicts become JSON lines; strings are written as they are (for broken lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join((json.dumps(line, ensure_ascii=False) if isinstance(line, dict) else line) + "\n" for line in lines)
    path.write_text(text, encoding="utf-8")


def annotation_dir(
    tmp_path: Path,
    files: dict[str, list[dict | str]],
    splits: str | None = None,
    seeds: dict[str, str] | None = None,
) -> tuple[Path, Path]:
    """Write an annotation directory and its seeds folder; returns (directory, seeds_dir).

    `splits` is the text of splits.yaml; by default every doc_id found in `files` is in train.
    """
    directory, seeds_dir = tmp_path / "annotations", tmp_path / "seeds"
    directory.mkdir()
    seeds_dir.mkdir()
    shutil.copy(SHIPPED / "schema.yaml", directory / "schema.yaml")
    for name, lines in files.items():
        write_jsonl(directory / name, lines)
    if splits is None:
        records = [line for lines in files.values() for line in lines if isinstance(line, dict)]
        doc_ids = sorted({record["doc_id"] for record in records if "doc_id" in record})
        splits = "train:\n" + "".join(f"- {doc_id}\n" for doc_id in doc_ids)
    (directory / "splits.yaml").write_text(splits, encoding="utf-8")
    for doc_id, text in (seeds or {}).items():
        (seeds_dir / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    return directory, seeds_dir


def problems_of(directory: Path, seeds_dir: Path) -> list[Problem]:
    return load_corpus(directory, seeds_dir=seeds_dir).problems


def located(problems: list[Problem], directory: Path) -> list[tuple[str, str, int]]:
    """(rule, file relative to the annotation directory, line) of each problem, in report order."""
    return [(p.rule, p.path.relative_to(directory).as_posix(), p.line) for p in problems]


def reported(directory: Path, seeds_dir: Path) -> list[tuple[str, str, int]]:
    return located(problems_of(directory, seeds_dir), directory)


# --- the shipped annotations ----------------------------------------------------------


def test_shipped_annotations_have_no_problems():
    corpus = load_corpus(SHIPPED, seeds_dir=ROOT / "seeds")
    assert [str(p) for p in corpus.problems] == []
    assert sum(r.data["source"] == "seed" for r in corpus.records) == 49


def test_cli_validates_the_shipped_annotations_and_prints_the_counts_table(capsys):
    assert cli.main(["validate", str(SHIPPED), "--seeds", str(ROOT / "seeds")]) == 0
    out = capsys.readouterr().out
    assert " records, 0 problem(s)" in out
    assert "| slice | split | docs | sentences |" in out
    assert re.search(r"^\| seed \| test \| 3 \| 49 \|", out, re.MULTILINE)
    assert re.search(r"^\| all \| all \|", out, re.MULTILINE)


def test_a_valid_fixture_has_no_problems(tmp_path):
    directory, seeds_dir = annotation_dir(
        tmp_path,
        {CORPUS: [composed("c1", 0), composed("c1", 1)], SEEDS: [seed(0), seed(1)]},
        seeds={"s1": SEED_ARTICLE},
    )
    assert reported(directory, seeds_dir) == []


# --- reading JSON Lines ---------------------------------------------------------------


def test_invalid_json(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), '{"id": "c1-1", "doc_id": ']})
    assert reported(directory, seeds_dir) == [("invalid-json", CORPUS, 2)]


def test_not_an_object(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), '["c1-1", "c1"]']})
    assert reported(directory, seeds_dir) == [("not-an-object", CORPUS, 2)]


@pytest.mark.parametrize("blank", ["", "   \t"], ids=["empty", "whitespace"])
def test_blank_line(tmp_path, blank):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), blank, composed("c1", 1)]})
    assert reported(directory, seeds_dir) == [("blank-line", CORPUS, 2)]


# --- fields ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(REQUIRED_FIELDS))
def test_missing_field(tmp_path, name):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), without(composed("c1", 1), name)]})
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("missing-field", CORPUS, 2)]
    assert f"'{name}'" in problems[0].message


@pytest.mark.parametrize(
    "name, value",
    [("sent_idx", "1"), ("sent_idx", True), ("sent_idx", 1.0), ("id", 7), ("text", None), ("stances", ["favor"])],
    ids=["sent_idx-string", "sent_idx-bool", "sent_idx-float", "id-int", "text-null", "stances-list"],
)
def test_field_type(tmp_path, name, value):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), composed("c1", 1, **{name: value})]})
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("field-type", CORPUS, 2)]
    assert f"'{name}'" in problems[0].message


def test_negative_sent_idx_is_a_field_type_problem(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), composed("c1", -1, id="c1-x")]})
    assert ("field-type", CORPUS, 2) in reported(directory, seeds_dir)


@pytest.mark.parametrize("text", ["", " \n "], ids=["empty", "whitespace"])
def test_empty_text(tmp_path, text):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), composed("c1", 1, text=text)]})
    assert reported(directory, seeds_dir) == [("empty-text", CORPUS, 2)]


def test_unknown_source(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), composed("c1", 1, source="scraped")]})
    assert reported(directory, seeds_dir) == [("unknown-source", CORPUS, 2)]


def test_unknown_target(tmp_path):
    stances = {"un_treaty": "favor", "nato_membership": "against"}
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), composed("c1", 1, stances=stances)]})
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("unknown-target", CORPUS, 2)]
    assert "nato_membership" in problems[0].message


@pytest.mark.parametrize("polarity", ["pro", "Favor", None], ids=["pro", "capitalised", "null"])
def test_unknown_polarity(tmp_path, polarity):
    stances = {"un_treaty": polarity}
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), composed("c1", 1, stances=stances)]})
    assert reported(directory, seeds_dir) == [("unknown-polarity", CORPUS, 2)]


def test_empty_stances(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), composed("c1", 1, stances={})]})
    assert reported(directory, seeds_dir) == [("empty-stances", CORPUS, 2)]


@pytest.mark.parametrize(
    "record",
    [without(composed("c1", 1), "rationale"), composed("c1", 1, rationale="  ")],
    ids=["absent", "blank"],
)
def test_composed_record_without_rationale_is_a_missing_field(tmp_path, record):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), record]})
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("missing-field", CORPUS, 2)]
    assert "rationale" in problems[0].message


def test_seed_record_needs_no_rationale(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {SEEDS: [seed(0), seed(1)]}, seeds={"s1": SEED_ARTICLE})
    assert reported(directory, seeds_dir) == []


# --- documents ------------------------------------------------------------------------


def test_duplicate_id(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), composed("c1", 1, id="c1-0")]})
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("duplicate-id", CORPUS, 2)]
    assert "batch.jsonl:1" in problems[0].message


def test_duplicate_id_across_files(tmp_path):
    files = {"corpus/a.jsonl": [composed("c1", 0)], "corpus/b.jsonl": [composed("c2", 0, id="c1-0")]}
    directory, seeds_dir = annotation_dir(tmp_path, files)
    assert reported(directory, seeds_dir) == [("duplicate-id", "corpus/b.jsonl", 1)]


def test_sent_idx_gap(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0), composed("c1", 2)]})
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("sent-idx", CORPUS, 2)]
    assert "gap" in problems[0].message


def test_sent_idx_not_starting_at_zero_is_a_gap(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 1), composed("c1", 2)]})
    assert reported(directory, seeds_dir) == [("sent-idx", CORPUS, 1)]


def test_sent_idx_repeat(tmp_path):
    records = [composed("c1", 0), composed("c1", 1), composed("c1", 1, id="c1-1b")]
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: records})
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("sent-idx", CORPUS, 3)]
    assert "repeated" in problems[0].message


def test_sent_idx_may_be_listed_out_of_order(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 1), composed("c1", 0)]})
    assert reported(directory, seeds_dir) == []


def test_document_split_over_two_files(tmp_path):
    files = {"corpus/a.jsonl": [composed("c1", 0)], "corpus/b.jsonl": [composed("c1", 1)]}
    directory, seeds_dir = annotation_dir(tmp_path, files)
    assert reported(directory, seeds_dir) == [("doc-in-two-files", "corpus/a.jsonl", 1)]


# --- seed records ---------------------------------------------------------------------


def test_seed_offsets_text_not_equal_to_the_slice(tmp_path):
    records = [seed(0), seed(1, text="وتدعو إلى حوار ثنائي مع موسكو.")]
    directory, seeds_dir = annotation_dir(tmp_path, {SEEDS: records}, seeds={"s1": SEED_ARTICLE})
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("seed-offsets", SEEDS, 2)]
    assert "s1.txt[26:57]" in problems[0].message


@pytest.mark.parametrize(
    "offsets",
    [{"start": "26"}, {"start": None}, {"start": False}, {"end": 999}, {"start": 40, "end": 30}],
    ids=["start-string", "start-null", "start-bool", "end-past-the-article", "start-after-end"],
)
def test_seed_offsets_must_be_integers_inside_the_article(tmp_path, offsets):
    records = [seed(0), seed(1, **offsets)]
    directory, seeds_dir = annotation_dir(tmp_path, {SEEDS: records}, seeds={"s1": SEED_ARTICLE})
    assert ("seed-offsets", SEEDS, 2) in reported(directory, seeds_dir)


@pytest.mark.parametrize("end", [None, "57", 57.0], ids=["null", "string", "float"])
def test_seed_offsets_with_an_integer_start_and_a_non_integer_end(tmp_path, end):
    directory, seeds_dir = annotation_dir(tmp_path, {SEEDS: [seed(0), seed(1, end=end)]}, seeds={"s1": SEED_ARTICLE})
    assert reported(directory, seeds_dir) == [("seed-offsets", SEEDS, 2)]


def test_seed_offsets_missing(tmp_path):
    records = [seed(0), without(seed(1), "start", "end")]
    directory, seeds_dir = annotation_dir(tmp_path, {SEEDS: records}, seeds={"s1": SEED_ARTICLE})
    assert ("seed-offsets", SEEDS, 2) in reported(directory, seeds_dir)


def test_seed_file_missing_for_a_seed_record(tmp_path):
    records = [seed(0), seed(1), seed(0, doc_id="s9")]
    directory, seeds_dir = annotation_dir(tmp_path, {SEEDS: records}, seeds={"s1": SEED_ARTICLE})
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("seed-file", SEEDS, 3)]
    assert "s9.txt" in problems[0].message


def test_seed_coverage_sentence_left_out(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {SEEDS: [seed(0)]}, seeds={"s1": SEED_ARTICLE})
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("seed-coverage", SEEDS, 1)]
    assert "first at offset 26" in problems[0].message


def test_seed_coverage_overlapping_spans(tmp_path):
    # The second record repeats the first sentence (with a later sent_idx): its span overlaps.
    records = [seed(0), seed(1), seed(0, sent_idx=2, id="s1-2")]
    directory, seeds_dir = annotation_dir(tmp_path, {SEEDS: records}, seeds={"s1": SEED_ARTICLE})
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("seed-coverage", SEEDS, 3)]
    assert "overlaps" in problems[0].message


# --- splits ---------------------------------------------------------------------------


def test_doc_not_in_splits_is_reported_once_per_document(tmp_path):
    records = [composed("c1", 0), composed("c2", 0), composed("c2", 1)]
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: records}, splits="train:\n- c1\n")
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("doc-not-in-splits", CORPUS, 2)]
    assert "'c2'" in problems[0].message


def test_doc_in_two_splits(tmp_path):
    records = [composed("c1", 0), composed("c2", 0)]
    splits = "train:\n- c1\n- c2\ntest:\n- c1\n"
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: records}, splits=splits)
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("doc-in-two-splits", "splits.yaml", 5)]
    assert "train" in problems[0].message and "test" in problems[0].message


def test_text_in_two_splits_ignores_whitespace_differences(tmp_path):
    text = "ترفض الدولة الاتفاقية الجديدة."
    records = [composed("c1", 0, text=text), composed("c2", 0, text=f"  {text.replace(' ', '  ')}\n")]
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: records}, splits="train:\n- c1\ndev:\n- c2\n")
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("text-in-two-splits", CORPUS, 2)]
    assert "'train'" in problems[0].message


def test_same_text_within_one_split_is_allowed(tmp_path):
    records = [composed("c1", 0, text="نص مكرر."), composed("c2", 0, text="نص مكرر.")]
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: records}, splits="train:\n- c1\n- c2\n")
    assert reported(directory, seeds_dir) == []


def test_unknown_doc_in_splits(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0)]}, splits="train:\n- c1\n- c9\n")
    problems = problems_of(directory, seeds_dir)
    # Reported at the entry's own line in splits.yaml; the message names the document.
    assert located(problems, directory) == [("unknown-doc-in-splits", "splits.yaml", 3)]
    assert "'c9'" in problems[0].message


def test_unknown_split(tmp_path):
    splits = "train:\n- c1\nvalidation:\n- c2\n"
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0)]}, splits=splits)
    problems = problems_of(directory, seeds_dir)
    assert located(problems, directory) == [("unknown-split", "splits.yaml", 3)]
    assert "'validation'" in problems[0].message


def test_invalid_splits_yaml(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0)]}, splits="train: [c1\n")
    assert ("invalid-yaml", "splits.yaml", 2) in reported(directory, seeds_dir)


def test_splits_file_missing(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("c1", 0)]})
    (directory / "splits.yaml").unlink()
    assert ("splits-file", "splits.yaml", 0) in reported(directory, seeds_dir)


def test_no_annotation_files(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {}, splits="train: []\n")
    assert reported(directory, seeds_dir) == [("no-annotations", ".", 0)]


# --- every problem, not just the first ------------------------------------------------


def test_two_different_problems_in_one_file_are_both_reported(tmp_path):
    lines = [composed("c1", 0), "{not json", composed("c1", 1, source="scraped")]
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: lines})
    assert reported(directory, seeds_dir) == [("invalid-json", CORPUS, 2), ("unknown-source", CORPUS, 3)]


def test_problems_in_different_files_and_stages_are_all_reported(tmp_path):
    files = {
        CORPUS: [composed("c1", 0), composed("c1", 1, stances={"un_treaty": "pro"}), composed("c1", 3)],
        SEEDS: [seed(0), seed(1, text="نص آخر.")],
    }
    directory, seeds_dir = annotation_dir(
        tmp_path, files, splits="train:\n- c1\ntest:\n- s1\n- s1\n", seeds={"s1": SEED_ARTICLE}
    )
    assert reported(directory, seeds_dir) == [
        ("unknown-polarity", CORPUS, 2),
        ("sent-idx", CORPUS, 3),
        ("seed-offsets", SEEDS, 2),
        ("doc-in-two-splits", "splits.yaml", 5),
    ]


def test_the_same_rule_broken_on_several_lines_is_reported_on_each(tmp_path):
    lines = [composed("c1", 0), "[1]", composed("c1", 1), '"text"', "42"]
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: lines})
    assert reported(directory, seeds_dir) == [("not-an-object", CORPUS, n) for n in (2, 4, 5)]


# --- the command line -----------------------------------------------------------------


def test_cli_fails_on_a_broken_directory_and_prints_path_line_rule_message(tmp_path, capsys):
    lines = [composed("c1", 0), "{not json", composed("c1", 1, stances={"nato": "favor"})]
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: lines})
    assert cli.main(["validate", str(directory), "--seeds", str(seeds_dir)]) == 1
    out = capsys.readouterr().out
    matches = [m for m in map(PROBLEM_LINE.match, out.splitlines()) if m]
    assert [(m["path"], int(m["line"]), m["rule"]) for m in matches] == [
        (str(directory / CORPUS), 2, "invalid-json"),
        (str(directory / CORPUS), 3, "unknown-target"),
    ]
    assert "2 records, 2 problem(s)" in out


def test_problem_prints_as_path_line_rule_message():
    problem = Problem(Path("annotations/corpus/batch.jsonl"), 7, "empty-text", "text is empty")
    assert str(problem) == "annotations/corpus/batch.jsonl:7: empty-text: text is empty"


# --- corpus v2: registers, annotated text and slices ----------------------------------


def test_a_register_from_the_schema_is_accepted(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("n1", 0, register="wire")]})
    assert reported(directory, seeds_dir) == []


def test_an_unknown_register(tmp_path):
    records = [composed("n1", 0, register="wire"), composed("n1", 1, register="tweet")]
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: records})
    assert reported(directory, seeds_dir) == [("unknown-register", CORPUS, 2)]


def test_annotated_text_is_a_source_of_its_own(tmp_path):
    directory, seeds_dir = annotation_dir(tmp_path, {CORPUS: [composed("a1", 0, source="annotated")]})
    assert reported(directory, seeds_dir) == []


def test_slices_keep_news_register_articles_apart_from_the_v1_corpus():
    from diplostance.annotations import record_slice

    assert record_slice(composed("c1", 0)) == "composed"
    assert record_slice(composed("n1", 0, register="op_ed")) == "news"
    assert record_slice(seed(0)) == "seed"
    assert record_slice(composed("a1", 0, source="annotated")) == "annotated"


def test_the_shipped_news_register_articles_meet_the_corpus_v2_targets():
    corpus = load_corpus(SHIPPED)
    news = [r.data for r in corpus.records if r.data.get("register")]
    assert len(news) >= 1200 and len({r["doc_id"] for r in news}) >= 100
    for split in ("train", "dev", "test"):
        assert any(corpus.splits[r["doc_id"]] == split for r in news)
    for target in corpus.labels.targets:
        against = sum(r.data["stances"].get(target) == "against" for r in corpus.records)
        assert against >= 80, target
