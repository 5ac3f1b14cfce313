"""The Label Studio round trip without a server: config, task selection, import, splits (diplostance.labelstudio).

Inputs are written in tmp_path in the formats label.py and evaluate.py write; the
real-server round trip is in test_labelstudio_server.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import yaml

from diplostance import cli
from diplostance.annotations import annotation_files, load_corpus, load_schema
from diplostance.labelstudio.config import labelling_config
from diplostance.labelstudio.export import export_tasks, k_center_greedy, select, tfidf_vectors, uncertainty
from diplostance.labelstudio.importer import assign_split, convert_tasks, krippendorff_alpha

ROOT = Path(__file__).resolve().parents[1]
LABELS = load_schema(ROOT / "annotations")
TARGETS = LABELS.targets


def probs(*stance_probs: tuple[float, float, float]) -> dict:
    """label.py's `probs`: one (favor, against, none) triple per target, in schema order."""
    return {t: dict(zip(LABELS.polarities, p, strict=True)) for t, p in zip(TARGETS, stance_probs, strict=True)}


def labelled(doc_id: str, sent_idx: int, text: str, p: dict, source: str = "news/a.txt") -> dict:
    """One record as label.py writes it."""
    return {
        "doc_id": doc_id,
        "source": source,
        "sent_idx": sent_idx,
        "start": sent_idx * 100,
        "end": sent_idx * 100 + len(text),
        "text": text,
        "stances": {t: max(v, key=v.get) for t, v in p.items()},
        "probs": p,
    }


SURE = probs((0.98, 0.01, 0.01), (0.01, 0.01, 0.98), (0.01, 0.01, 0.98))
UNSURE = probs((0.45, 0.10, 0.45), (0.01, 0.01, 0.98), (0.01, 0.01, 0.98))
MIDDLE = probs((0.70, 0.10, 0.20), (0.01, 0.01, 0.98), (0.01, 0.01, 0.98))


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def empty_annotations(tmp_path: Path, texts: list[str] = ()) -> Path:
    """An annotation folder with the shipped schema and one composed document holding `texts`."""
    directory = tmp_path / "annotations"
    directory.mkdir()
    shutil.copy(ROOT / "annotations" / "schema.yaml", directory / "schema.yaml")
    records = [
        {"id": f"c1-{i}", "doc_id": "c1", "sent_idx": i, "text": t, "stances": {"un_treaty": "none"},
         "source": "composed", "annotator": "tester", "rationale": "r"}
        for i, t in enumerate(texts or ["جملة مركبة للاختبار."])
    ]  # fmt: skip
    write_jsonl(directory / "c.jsonl", records)
    (directory / "splits.yaml").write_text("# comment kept\ntrain:\n- c1\ndev: []\ntest: []\n", encoding="utf-8")
    return directory


# --- config ----------------------------------------------------------------------------------


def test_config_has_one_single_choice_control_per_target_with_the_polarities():
    view = ET.fromstring(labelling_config(LABELS))
    controls = view.findall(".//Choices")
    assert [c.get("name") for c in controls] == list(TARGETS)
    for control in controls:
        assert control.get("choice") == "single" and control.get("toName") == "sentence"
        assert [c.get("value") for c in control.findall("Choice")] == list(LABELS.polarities)
    favor_hint = controls[0].find("Choice").get("hint")
    assert favor_hint.startswith("Supports a UN-centred")


def test_config_shows_the_sentence_with_its_context_right_to_left_and_the_arabic_target_names():
    xml = labelling_config(LABELS)
    view = ET.fromstring(xml)
    assert [t.get("value") for t in view.findall(".//Text")] == ["$context_before", "$text", "$context_after"]
    assert "direction: rtl" in view.find(".//View[Text]").get("style")
    assert "معاهدة أو قواعد أممية لأمن المعلومات" in xml


def test_a_changed_schema_gives_a_changed_config(tmp_path):
    schema = yaml.safe_load((ROOT / "annotations" / "schema.yaml").read_text(encoding="utf-8"))
    schema["targets"]["sanctions"] = {"name_en": "Cyber sanctions", "name_ar": "العقوبات", "favor": "Supports them."}
    (tmp_path / "schema.yaml").write_text(yaml.safe_dump(schema, allow_unicode=True, sort_keys=False), encoding="utf-8")
    names = [c.get("name") for c in ET.fromstring(labelling_config(load_schema(tmp_path))).findall(".//Choices")]
    assert names == [*TARGETS, "sanctions"]


def test_config_command_writes_the_file(tmp_path):
    out = tmp_path / "config.xml"
    assert cli.main(["labelstudio", "config", "--out", str(out), "--annotations", str(ROOT / "annotations")]) == 0
    assert out.read_text(encoding="utf-8") == labelling_config(LABELS)


# --- selection -------------------------------------------------------------------------------


def test_margin_and_entropy_rank_the_unsure_sentence_first():
    import numpy as np

    from diplostance.labelstudio.export import Candidate, prob_array

    candidates = [Candidate(t, "d", i, "x", p) for i, (t, p) in enumerate([("a", SURE), ("b", UNSURE), ("c", MIDDLE)])]
    array = prob_array(candidates, LABELS)
    for measure in ("margin", "entropy"):
        assert list(np.argsort(-uncertainty(array, measure))) == [1, 2, 0]


def test_uncertainty_export_writes_tasks_with_provenance_and_pre_annotations(tmp_path):
    source = write_jsonl(
        tmp_path / "out.jsonl",
        [labelled("a", 0, "الجملة الأولى.", SURE), labelled("a", 1, "الجملة الثانية.", UNSURE),
         labelled("a", 2, "الجملة الثالثة.", MIDDLE)],
    )  # fmt: skip
    out = tmp_path / "tasks.json"
    export_tasks(source, out, LABELS, n=1, strategy="uncertainty", model_version="m1")
    [task] = json.loads(out.read_text(encoding="utf-8"))
    data = task["data"]
    assert (data["text"], data["doc_id"], data["sent_idx"], data["input"]) == ("الجملة الثانية.", "a", 1, "news/a.txt")
    assert (data["context_before"], data["context_after"], data["start"]) == ("الجملة الأولى.", "الجملة الثالثة.", 100)
    [prediction] = task["predictions"]
    assert prediction["model_version"] == data["model_version"] == "m1" and 0 < prediction["score"] <= 1
    chosen = {r["from_name"]: r["value"]["choices"] for r in prediction["result"]}
    assert chosen == {"un_treaty": ["favor"], "multistakeholder": ["none"], "bilateral_cbm": ["none"]}


def test_export_reads_evaluate_predictions(tmp_path):
    record = {
        "id": "c9-00", "doc_id": "c9", "source": "composed", "slice": "composed", "text": "جملة من التقييم.",
        "stances": {t: {"stance": "none", "gold": "none", "probs": p} for t, p in UNSURE.items()},
    }  # fmt: skip
    source = write_jsonl(tmp_path / "predictions.jsonl", [record])
    out = tmp_path / "tasks.json"
    export_tasks(source, out, LABELS, n=5, strategy="uncertainty")
    [task] = json.loads(out.read_text(encoding="utf-8"))
    assert (task["data"]["record_id"], task["data"]["input"], task["data"]["sent_idx"]) == ("c9-00", str(source), 0)


def test_already_annotated_and_repeated_texts_are_never_sent(tmp_path):
    annotations = empty_annotations(tmp_path, ["نص   موسوم من قبل."])
    source = write_jsonl(
        tmp_path / "out.jsonl",
        [labelled("a", 0, "نص موسوم من قبل.", UNSURE), labelled("a", 1, "نص جديد.", MIDDLE),
         labelled("b", 0, "نص جديد.", UNSURE)],
    )  # fmt: skip
    out = tmp_path / "tasks.json"
    counts = export_tasks(source, out, LABELS, n=10, strategy="uncertainty", annotations=annotations)
    assert [t["data"]["text"] for t in json.loads(out.read_text(encoding="utf-8"))] == ["نص جديد."]
    assert counts["already_annotated"] == 1


def test_random_selection_is_seeded_and_capped_per_article(tmp_path):
    from diplostance.labelstudio.export import read_candidates

    records = [labelled(f"d{d}", i, f"جملة {d} رقم {i}.", MIDDLE) for d in range(3) for i in range(10)]
    candidates = read_candidates(write_jsonl(tmp_path / "out.jsonl", records))
    first = select(candidates, LABELS, 6, "random", per_article=2, seed=3)
    again = select(candidates, LABELS, 6, "random", per_article=2, seed=3)
    other = select(candidates, LABELS, 6, "random", per_article=2, seed=4)
    assert [c.text for c in first] == [c.text for c in again] != [c.text for c in other]
    assert sorted(c.doc_id for c in first) == ["d0", "d0", "d1", "d1", "d2", "d2"]


def test_diverse_selection_does_not_fill_the_batch_with_one_articles_near_duplicates(tmp_path):
    from diplostance.labelstudio.export import read_candidates

    text = "ترحب الدولة بالاتفاقية الأممية بشأن الجرائم السيبرانية {}."
    repeated = [labelled("same", i, text.format(i), UNSURE) for i in range(8)]
    others = [
        labelled("x", 0, "اتفق البلدان على خط ساخن بين فريقي الاستجابة.", MIDDLE),
        labelled("y", 0, "دعا المنتدى إلى دور للمجتمع المدني في حوكمة الإنترنت.", MIDDLE),
    ]
    candidates = read_candidates(write_jsonl(tmp_path / "out.jsonl", repeated + others))
    by_uncertainty = {c.doc_id for c in select(candidates, LABELS, 3, "uncertainty")}
    diverse = {c.doc_id for c in select(candidates, LABELS, 3, "diverse")}
    assert by_uncertainty == {"same"}
    assert diverse == {"same", "x", "y"}


def test_k_center_greedy_starts_from_the_highest_score_and_then_takes_the_farthest():
    import numpy as np

    vectors = tfidf_vectors(["aaaa bbbb", "aaaa bbbc", "zzzz yyyy"])
    assert k_center_greedy(vectors, np.array([0.9, 0.8, 0.1]), 2, ["a", "b", "c"], None) == [0, 2]


def test_export_of_an_unknown_target_is_one_line_error(tmp_path, capsys):
    record = labelled("a", 0, "نص.", {"sanctions": {"favor": 0.5, "against": 0.2, "none": 0.3}})
    source = write_jsonl(tmp_path / "out.jsonl", [record])
    with pytest.raises(SystemExit) as stop:
        cli.main(["labelstudio", "export", str(source), "--out", str(tmp_path / "t.json"), "--n", "1",
                  "--annotations", str(ROOT / "annotations")])  # fmt: skip
    assert stop.value.code == 1
    assert "targets ['sanctions'] are not in the schema" in capsys.readouterr().err
    assert not (tmp_path / "t.json").exists()


# --- import ----------------------------------------------------------------------------------


def ls_task(task_id: int, *annotations: dict, doc_id="news-a", sent_idx: int = 0, text: str = "نص الخبر.") -> dict:
    """A task of a Label Studio JSON export, as our export made it."""
    data = {"text": text, "doc_id": doc_id, "sent_idx": sent_idx, "input": "news/a.txt", "start": 0, "end": 9,
            "model_version": "m1"}  # fmt: skip
    return {"id": task_id, "project": 1, "data": data, "annotations": list(annotations), "predictions": [1]}


def ls_annotation(user: int, un_treaty="favor", multistakeholder="none", bilateral_cbm="none", cancelled=False):
    chosen = {"un_treaty": un_treaty, "multistakeholder": multistakeholder, "bilateral_cbm": bilateral_cbm}
    result = [
        {"from_name": t, "to_name": "sentence", "type": "choices", "value": {"choices": [v]}}
        for t, v in chosen.items()
        if v is not None
    ]
    return {"id": user * 100, "completed_by": user, "result": result, "was_cancelled": cancelled,
            "created_at": "2026-11-24T03:00:00Z", "updated_at": "2026-11-24T03:01:00Z", "lead_time": 4.2}  # fmt: skip


def test_import_keeps_the_agreed_label_with_annotators_timestamps_and_provenance():
    result = convert_tasks([ls_task(7, ls_annotation(1), ls_annotation(2))], LABELS)
    [record] = result.records
    assert record["stances"] == {"un_treaty": "favor", "multistakeholder": "none", "bilateral_cbm": "none"}
    assert (record["source"], record["id"]) == ("annotated", "news-a-00")
    assert record["annotator"] == "labelstudio:1+labelstudio:2"
    assert [a["created_at"] for a in record["annotations"]] == ["2026-11-24T03:00:00Z"] * 2
    assert record["provenance"].items() >= {"input": "news/a.txt", "labelstudio_task": 7, "model_version": "m1"}.items()
    assert result.review == [] and result.problems == []


def test_import_keeps_a_majority_and_sends_a_tie_to_review():
    majority = ls_task(1, ls_annotation(1), ls_annotation(2), ls_annotation(3, un_treaty="against"))
    tie = ls_task(2, ls_annotation(1), ls_annotation(2, un_treaty="against"), sent_idx=1, text="نص آخر.")
    result = convert_tasks([majority, tie], LABELS)
    assert [r["stances"]["un_treaty"] for r in result.records] == ["favor"]
    [review] = result.review
    assert review["task_id"] == 2 and "no majority for un_treaty" in review["reasons"][0]
    assert review["votes"]["un_treaty"] == {"labelstudio:1": "favor", "labelstudio:2": "against"}


@pytest.mark.parametrize(
    ("annotation", "reason"),
    [
        (ls_annotation(1, cancelled=True), "skipped"),
        (ls_annotation(1, bilateral_cbm=None), "left target bilateral_cbm out"),
        (ls_annotation(1, un_treaty="maybe"), "chose ['maybe'] for un_treaty"),
    ],
)
def test_import_reports_skipped_incomplete_and_unknown_annotations_by_task_id(annotation, reason):
    result = convert_tasks([ls_task(42, annotation)], LABELS)
    assert result.records == []
    assert [r["task_id"] for r in result.review] == [42]
    assert any(line.startswith("task 42: ") and reason in line for line in result.problems)


def test_an_unannotated_task_goes_to_review():
    result = convert_tasks([ls_task(5)], LABELS)
    assert result.review[0]["reasons"] == ["no annotation"]


def test_agreement_per_target():
    tasks = [
        ls_task(1, ls_annotation(1), ls_annotation(2), sent_idx=0),
        ls_task(2, ls_annotation(1, "none"), ls_annotation(2, "none"), sent_idx=1, text="ب."),
        ls_task(3, ls_annotation(1, "against"), ls_annotation(2, "none"), sent_idx=2, text="ج."),
    ]
    agreement = convert_tasks(tasks, LABELS).agreement
    assert agreement["un_treaty"]["tasks"] == 3 and agreement["un_treaty"]["observed"] == round(2 / 3, 4)
    assert agreement["multistakeholder"]["observed"] == 1.0


def test_krippendorff_alpha_known_values():
    assert krippendorff_alpha([["a", "a"], ["b", "b"]]) == 1.0
    # two coders agreeing on half of four units, balanced values: 1 - (n - 1) * D_o / sum(n_c * n_k) = 1 - 7 * 4 / 32
    assert krippendorff_alpha([["a", "a"], ["a", "b"], ["b", "b"], ["b", "a"]]) == pytest.approx(0.125)
    assert krippendorff_alpha([["a"], ["b"]]) is None


def test_assign_split_adds_new_documents_and_never_moves_existing_ones(tmp_path):
    directory = empty_annotations(tmp_path)
    added = assign_split(directory / "splits.yaml", ["c1", "news-a", "news-b", "news-a"], "train")
    text = (directory / "splits.yaml").read_text(encoding="utf-8")
    assert added == ["news-a", "news-b"]
    assert text.startswith("# comment kept\n")
    assert yaml.safe_load(text) == {"train": ["c1", "news-a", "news-b"], "dev": [], "test": []}


def test_assign_split_fills_an_empty_flow_list(tmp_path):
    directory = empty_annotations(tmp_path)
    assign_split(directory / "splits.yaml", ["news-a"], "dev")
    assert yaml.safe_load((directory / "splits.yaml").read_text(encoding="utf-8"))["dev"] == ["news-a"]


def test_assign_split_leaves_a_file_it_cannot_edit_safely_untouched(tmp_path):
    from diplostance.errors import UserError

    directory = empty_annotations(tmp_path)
    indented = "train:\n  - c1\n"  # an indented block list: the new item would land outside it
    (directory / "splits.yaml").write_text(indented, encoding="utf-8")
    with pytest.raises(UserError, match="add them by hand"):
        assign_split(directory / "splits.yaml", ["news-a"], "train")
    assert (directory / "splits.yaml").read_text(encoding="utf-8") == indented


@pytest.mark.parametrize("flow", ["train: [c1]\ndev: []\n", "# kept\ntrain: [c1,\n  c2]  # end\ndev: []\n"])
def test_assign_split_rewrites_a_flow_list_as_a_block_list(tmp_path, flow):
    directory = empty_annotations(tmp_path)
    (directory / "splits.yaml").write_text(flow, encoding="utf-8")
    assert assign_split(directory / "splits.yaml", ["news-a"], "train") == ["news-a"]
    text = (directory / "splits.yaml").read_text(encoding="utf-8")
    assert yaml.safe_load(text)["train"][-1] == "news-a" and yaml.safe_load(text)["dev"] == []
    assert text.startswith("# kept\n") == flow.startswith("# kept\n")


def test_imported_records_in_annotated_pass_the_validator_and_reach_training_data(tmp_path, capsys):
    directory = empty_annotations(tmp_path)
    export = tmp_path / "export.json"
    tasks = [ls_task(1, ls_annotation(1), sent_idx=3), ls_task(2, ls_annotation(1, "none"), sent_idx=9, text="ثانٍ.")]
    tasks.append(ls_task(3, ls_annotation(1), ls_annotation(2, "against"), sent_idx=5, text="خلاف."))
    export.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    out = directory / "annotated" / "round_01.jsonl"
    code = cli.main(["labelstudio", "import", str(export), "--out", str(out), "--split", "train",
                     "--annotations", str(directory)])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0 and "task 3: no majority for un_treaty" in printed and "| un_treaty | 1 | 0.0 |" in printed
    assert out.with_name("round_01.review.jsonl") not in annotation_files(directory)
    corpus = load_corpus(directory, tmp_path / "seeds")
    assert corpus.problems == []  # sent_idx 3 and 9 of one article: a sample, not a gap
    assert sorted(r.data["id"] for r in corpus.records if r.data["source"] == "annotated") == ["news-a-03", "news-a-09"]
    from diplostance.data import load_annotations

    train = load_annotations(directory, tmp_path / "seeds").split("train")
    assert sorted(s for s in train["slice"]) == ["annotated", "annotated", "composed"]


def test_annotated_records_of_one_article_may_come_in_several_rounds(tmp_path):
    directory = empty_annotations(tmp_path)
    for round_, sent_idx in ((1, 2), (2, 6)):
        result = convert_tasks([ls_task(round_, ls_annotation(1), sent_idx=sent_idx, text=f"نص {sent_idx}.")], LABELS)
        out = directory / "annotated" / f"round_{round_}.jsonl"
        out.parent.mkdir(exist_ok=True)
        write_jsonl(out, result.records)
    assign_split(directory / "splits.yaml", ["news-a"], "train")
    assert load_corpus(directory, tmp_path / "seeds").problems == []


def test_composed_documents_still_may_not_have_gaps(tmp_path):
    directory = empty_annotations(tmp_path, ["أ.", "ب."])
    lines = (directory / "c.jsonl").read_text(encoding="utf-8").splitlines()
    (directory / "c.jsonl").write_text(lines[0] + "\n" + lines[1].replace('"sent_idx": 1', '"sent_idx": 4') + "\n")
    assert [p.rule for p in load_corpus(directory, tmp_path / "seeds").problems] == ["sent-idx"]


# --- outputs, repeats and options (issues 18 and 20) ------------------------------------------


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit status and stderr of one `python -m diplostance` command."""
    try:
        code = cli.main(argv)
    except SystemExit as stop:
        code = stop.code
    return code, capsys.readouterr().err


def write_export(path: Path, tasks: list[dict]) -> Path:
    path.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    return path


def test_import_refuses_to_write_over_the_export_it_reads(tmp_path, capsys):
    directory = empty_annotations(tmp_path)
    export = write_export(tmp_path / "export.json", [ls_task(1, ls_annotation(1))])
    before = export.read_bytes()
    code, err = run_cli(["labelstudio", "import", str(export), "--out", str(export), "--annotations", str(directory)],
                        capsys)  # fmt: skip
    assert code == 2 and err.startswith("error: --out") and "is the input" in err and err.count("\n") == 1
    assert export.read_bytes() == before


def test_import_refuses_an_existing_annotation_file_unless_overwrite(tmp_path, capsys):
    directory = empty_annotations(tmp_path)
    export = write_export(tmp_path / "export.json", [ls_task(1, ls_annotation(1))])
    existing = directory / "c.jsonl"
    before = existing.read_bytes()
    argv = ["labelstudio", "import", str(export), "--out", str(existing), "--annotations", str(directory)]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert existing.read_bytes() == before and not existing.with_name("c.review.jsonl").exists()
    assert run_cli([*argv, "--overwrite"], capsys)[0] == 0
    assert [json.loads(line)["id"] for line in existing.read_text(encoding="utf-8").splitlines()] == ["news-a-00"]


def test_export_refuses_to_write_over_its_input_or_an_existing_file(tmp_path, capsys):
    source = write_jsonl(tmp_path / "out.jsonl", [labelled("a", i, f"جملة رقم {i}.", UNSURE) for i in range(3)])
    before = source.read_bytes()
    common = ["--n", "1", "--annotations", str(ROOT / "annotations")]
    code, err = run_cli(["labelstudio", "export", str(source), "--out", str(source), *common], capsys)
    assert code == 2 and "is the input" in err and source.read_bytes() == before
    tasks = tmp_path / "tasks.json"
    tasks.write_text("[]\n", encoding="utf-8")
    code, err = run_cli(["labelstudio", "export", str(source), "--out", str(tasks), *common], capsys)
    assert code == 2 and "already exists" in err and tasks.read_text(encoding="utf-8") == "[]\n"


def test_config_refuses_an_existing_file_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "config.xml"
    out.write_text("mine", encoding="utf-8")
    argv = ["labelstudio", "config", "--out", str(out), "--annotations", str(ROOT / "annotations")]
    assert run_cli(argv, capsys)[0] == 2 and out.read_text(encoding="utf-8") == "mine"
    assert run_cli([*argv, "--overwrite"], capsys)[0] == 0 and out.read_text(encoding="utf-8").startswith("<View")


@pytest.mark.parametrize("n", ["-5", "0"])
def test_export_refuses_a_count_that_is_not_positive(tmp_path, capsys, n):
    source = write_jsonl(tmp_path / "out.jsonl", [labelled("a", 0, "جملة.", UNSURE)])
    out = tmp_path / "tasks.json"
    code, err = run_cli(["labelstudio", "export", str(source), "--out", str(out), "--n", n], capsys)
    assert code == 2 and "--n must be a positive number" in err and not out.exists()


def test_the_same_task_twice_in_one_export_gives_one_record():
    task = ls_task(7, ls_annotation(1))
    result = convert_tasks([task, json.loads(json.dumps(task))], LABELS)
    assert [r["id"] for r in result.records] == ["news-a-00"] and result.review == []
    assert result.problems == ["task 7: appears more than once in the export; imported once"]


def test_two_tasks_for_one_sentence_with_different_labels_go_to_review():
    result = convert_tasks([ls_task(1, ls_annotation(1)), ls_task(2, ls_annotation(1, un_treaty="against"))], LABELS)
    assert result.records == []
    assert [r["task_id"] for r in result.review] == [1, 2]
    assert "different texts or labels" in result.review[0]["reasons"][0]


def test_a_task_whose_doc_id_is_a_composed_document_goes_to_review(tmp_path, capsys):
    directory = empty_annotations(tmp_path)  # composed document c1
    export = write_export(tmp_path / "export.json", [ls_task(1, ls_annotation(1), doc_id="c1", sent_idx=5)])
    out = directory / "annotated" / "r1.jsonl"
    assert cli.main(["labelstudio", "import", str(export), "--out", str(out), "--annotations", str(directory)]) == 0
    assert "task 1: doc_id 'c1' is already a composed document" in capsys.readouterr().out
    assert out.read_text(encoding="utf-8") == ""
    assert load_corpus(directory, tmp_path / "seeds").problems == []


def test_the_same_export_imported_twice_adds_nothing_the_second_time(tmp_path, capsys):
    directory = empty_annotations(tmp_path)
    export = write_export(tmp_path / "export.json", [ls_task(1, ls_annotation(1))])
    for round_ in (1, 2):
        out = directory / "annotated" / f"r{round_}.jsonl"
        argv = ["labelstudio", "import", str(export), "--out", str(out), "--split", "train"]
        assert cli.main([*argv, "--annotations", str(directory)]) == 0
    assert "task 1: already imported: news-a-00 is in" in capsys.readouterr().out
    assert (directory / "annotated" / "r2.jsonl").read_text(encoding="utf-8") == ""
    assert load_corpus(directory, tmp_path / "seeds").problems == []


def test_import_refuses_an_unknown_register_before_writing(tmp_path, capsys):
    directory = empty_annotations(tmp_path)
    export = write_export(tmp_path / "export.json", [ls_task(1, ls_annotation(1))])
    out = directory / "annotated" / "r1.jsonl"
    code, err = run_cli(["labelstudio", "import", str(export), "--out", str(out), "--register", "blog",
                         "--annotations", str(directory)], capsys)  # fmt: skip
    assert code == 2 and "--register 'blog' is not one of" in err and "wire" in err
    assert not out.parent.exists()


def test_a_json_min_export_is_refused_with_one_line(tmp_path, capsys):
    directory = empty_annotations(tmp_path)
    rows = [{"id": 1, "text": "نص.", "doc_id": "news-a", "sent_idx": 0, "un_treaty": "favor", "annotator": 1,
             "annotation_id": 3, "created_at": "2026-11-24T03:00:00Z"}]  # fmt: skip
    export = write_export(tmp_path / "export.json", rows)
    out = directory / "annotated" / "r1.jsonl"
    code, err = run_cli(["labelstudio", "import", str(export), "--out", str(out), "--annotations", str(directory)],
                        capsys)  # fmt: skip
    assert code == 1 and "JSON-MIN" in err and "export the project as JSON" in err and err.count("\n") == 1
    assert not out.exists()


def test_import_split_into_a_flow_style_splits_file(tmp_path, capsys):
    directory = empty_annotations(tmp_path)
    (directory / "splits.yaml").write_text("train: [c1]\ndev: []\ntest: []\n", encoding="utf-8")
    export = write_export(tmp_path / "export.json", [ls_task(1, ls_annotation(1))])
    out = directory / "annotated" / "r1.jsonl"
    argv = [
        "labelstudio",
        "import",
        str(export),
        "--out",
        str(out),
        "--split",
        "train",
        "--annotations",
        str(directory),
    ]
    assert cli.main(argv) == 0
    corpus = load_corpus(directory, tmp_path / "seeds")
    assert corpus.problems == [] and corpus.splits == {"c1": "train", "news-a": "train"}


def test_import_writes_nothing_when_splits_yaml_cannot_be_edited(tmp_path, capsys):
    directory = empty_annotations(tmp_path)
    (directory / "splits.yaml").write_text("train:\n  - c1\n", encoding="utf-8")
    export = write_export(tmp_path / "export.json", [ls_task(1, ls_annotation(1))])
    out = directory / "annotated" / "r1.jsonl"
    argv = [
        "labelstudio",
        "import",
        str(export),
        "--out",
        str(out),
        "--split",
        "train",
        "--annotations",
        str(directory),
    ]
    code, err = run_cli(argv, capsys)
    assert code == 2 and "add them by hand" in err and not out.parent.exists()
