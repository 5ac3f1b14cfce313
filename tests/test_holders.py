"""Stance holders: the actor inventory and its checks, candidate matching through Arabic morphology, the rule
model's choices, its save and load, its fit and its metrics. Every sentence here is written for the test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diplostance.actors import AUTHOR, UNKNOWN, check_inventory, load_inventory, nisba_forms
from diplostance.annotations import load_corpus
from diplostance.holders import (
    HOLDER_ACTORS_FILE,
    HOLDERS_FILE,
    GoldDocument,
    HolderModelError,
    Matcher,
    RuleHolderModel,
    RuleParameters,
    fit_holder_model,
    holder_metrics,
    load_holder_model,
    save_holder_model,
)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "annotations" / "actors.yaml"


@pytest.fixture(scope="module")
def inventory():
    return load_inventory(SHIPPED)


@pytest.fixture(scope="module")
def matcher(inventory):
    return Matcher(inventory)


def found(matcher, sentence):
    return [(m.actor, m.text) for m in matcher.find(sentence)]


# ---------------------------------------------------------------------------- the inventory


def test_the_shipped_inventory_loads_without_problems_and_holds_the_major_actors(inventory):
    _, problems = check_inventory(SHIPPED)
    assert problems == []
    expected = {"RUS": "state", "USA": "state", "SAU": "state", "UNGA": "intergovernmental",
                "UNSG": "intergovernmental", "OEWG": "intergovernmental", "AHC": "intergovernmental",
                "ITU": "intergovernmental", "LAS": "intergovernmental", "ICANN": "internet_body",
                "IGF": "internet_body", "HRW": "civil_society", "ACCESS_NOW": "civil_society"}  # fmt: skip
    assert {actor_id: inventory[actor_id].type for actor_id in expected} == expected
    assert all(len(a.id) == 3 for a in inventory.actors.values() if a.type == "state")


def test_nisba_forms_cover_article_gender_number_and_agree_word_by_word():
    forms = nisba_forms("روسي")
    assert {"الروسي", "الروسية", "الروسيين", "الروسيون", "روسية", "الروسيتين"} <= set(forms)
    assert "الكورية الجنوبية" in nisba_forms("كوري جنوبي")


def write_inventory(tmp_path, body: str) -> Path:
    path = tmp_path / "actors.yaml"
    path.write_text("types:\n  state: a state\n  intergovernmental: a body\nactors:\n" + body, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("body", "rule", "line"),
    [
        ("  - {id: RUS, type: state, en: Russia, names: [روسيا]}\n"
         "  - {id: RUS, type: state, en: Russia, names: [موسكو]}\n", "duplicate-actor", 6),
        ("  - {id: RUS, type: country, en: Russia, names: [روسيا]}\n", "actor-type", 5),
        ("  - {id: RUS, type: state, en: Russia, names: []}\n", "actor-names", 5),
        ("  - {id: rus, type: state, en: Russia, names: [روسيا]}\n", "actor-id", 5),
        ("  - {id: RUSSIA, type: state, en: Russia, names: [روسيا]}\n", "actor-id", 5),
        ("  - {id: RUS, type: state, en: Russia, names: [روسيا]}\n"
         "  - {id: BLR, type: state, en: Belarus, names: [بيلاروسيا], forms: [روسيا]}\n", "alias-conflict", 6),
        ("  - {id: RUS, type: state, en: Russia, names: [روسيا], nisba: [روسي]}\n"
         "  - {id: XYZ, type: state, en: Other, names: [الروسية]}\n", "alias-conflict", 6),
    ],
)  # fmt: skip
def test_a_bad_inventory_entry_is_reported_with_its_line_and_rule(tmp_path, body, rule, line):
    _, problems = check_inventory(write_inventory(tmp_path, body))
    assert (line, rule) in [(p[0], p[1]) for p in problems]


def annotation_folder(tmp_path: Path, records: list[dict], actors: bool = True) -> Path:
    folder = tmp_path / "annotations"
    folder.mkdir()
    shutil.copy(ROOT / "annotations" / "schema.yaml", folder / "schema.yaml")
    if actors:
        shutil.copy(SHIPPED, folder / "actors.yaml")
    (folder / "splits.yaml").write_text("train: [d1]\n", encoding="utf-8")
    lines = []
    for i, extra in enumerate(records):
        record = {"id": f"d1-{i:02d}", "doc_id": "d1", "sent_idx": i, "text": f"جملة مكتوبة للاختبار رقم {i}.",
                  "stances": {"un_treaty": "favor", "multistakeholder": "none", "bilateral_cbm": "none"},
                  "source": "composed", "annotator": "test", "rationale": "test", **extra}  # fmt: skip
        lines.append(json.dumps(record, ensure_ascii=False))
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_holders_in_records_are_checked_against_the_stances_and_the_inventory(tmp_path):
    folder = annotation_folder(
        tmp_path,
        [
            {"holders": {"un_treaty": ["RUS", "KGZ"]}},  # fine
            {"holders": {"un_treaty": ["author"]}},  # fine
            {"holders": {"un_treaty": ["XXX"]}},
            {"holders": {"multistakeholder": ["RUS"]}},
            {"holders": {"un_treaty": ["author", "RUS"]}},
            {"holders": {"nonsense": ["RUS"]}},
            {"holders": ["RUS"]},
            {"holders": {"un_treaty": []}},
        ],
    )
    problems = [(p.line, p.rule) for p in load_corpus(folder).problems]
    assert problems == [
        (3, "unknown-actor"), (4, "holder-on-none"), (5, "holder-value"), (6, "holder-target"),
        (7, "holders-type"), (8, "holder-value"),
    ]  # fmt: skip


def test_holders_naming_actors_need_an_inventory(tmp_path):
    folder = annotation_folder(tmp_path, [{"holders": {"un_treaty": ["RUS"]}}], actors=False)
    assert [p.rule for p in load_corpus(folder).problems] == ["no-inventory"]


def test_the_shipped_annotations_validate_with_their_holders():
    corpus = load_corpus(ROOT / "annotations")
    assert corpus.problems == []
    assert sum("holders" in r.data for r in corpus.records) >= 300


# ---------------------------------------------------------------------------- morphology of the candidates


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("وروسيا ترحب.", [("RUS", "وروسيا")]),
        ("دعت لروسيا وبروسيا فلروسيا.", [("RUS", "لروسيا"), ("RUS", "وبروسيا"), ("RUS", "فلروسيا")]),
        ("وللأمم المتحدة دور.", [("UN", "وللأمم المتحدة")]),
        ("قالت الأمم المتحدة، وأيدت الصين.", [("UN", "الأمم المتحدة"), ("CHN", "الصين")]),
        ("وبالسعودية خبراء.", [("SAU", "وبالسعودية"), ("EXPERTS", "خبراء")]),
    ],
)
def test_proclitics_and_the_article_contracted_after_lam_are_stripped(matcher, sentence, expected):
    assert found(matcher, sentence) == expected


@pytest.mark.parametrize(
    ("sentence", "expected"),
    [
        ("المقترح الروسي", [("RUS", "الروسي")]),
        ("المبادرة الروسية", [("RUS", "الروسية")]),
        ("والخبراء السعوديين", [("EXPERTS", "والخبراء"), ("SAU", "السعوديين")]),
        ("الشركات الأمريكيتين", [("USA", "الأمريكيتين")]),
        ("مصدرا أمريكيا", [("USA", "أمريكيا")]),
        ("المسؤولة الكورية الجنوبية", [("KOR", "المسؤولة الكورية الجنوبية")]),
    ],
)
def test_nisba_adjectives_in_every_gender_and_number_name_their_state(matcher, sentence, expected):
    mentions = matcher.find(sentence)
    assert [(m.actor, m.text) for m in mentions][-len(expected) :] == expected


@pytest.mark.parametrize(
    ("sentence", "actor", "text", "head"),
    [
        ("قال وزير خارجية روسيا إن", "RUS", "وزير خارجية روسيا", "وزير"),
        ("وأعلنت وزارة الخارجية الصينية أن", "CHN", "وزارة الخارجية الصينية", "وزاره"),
        ("ورأى الجانب الروسي أن", "RUS", "الجانب الروسي", "الجانب"),
        ("وقال المتحدث باسم الخارجية الأمريكية", "USA", "المتحدث باسم الخارجية الأمريكية", "المتحدث"),
        ("ورحب الأمين العام لجامعة الدول العربية", "LAS", "الأمين العام لجامعة الدول العربية", "الامين"),
    ],
)
def test_construct_states_take_their_head_into_the_mention(matcher, sentence, actor, text, head):
    mention = matcher.find(sentence)[0]
    assert (mention.actor, mention.text, mention.head) == (actor, text, head)
    assert sentence[mention.start : mention.end] == mention.text


def test_spans_point_into_the_sentence_as_given_with_diacritics_hamza_and_punctuation(matcher):
    sentence = "وَأكّدت الولايات المتحدة الأمريكية، وامريكا، والأمم المتحدة «ترحب»."
    mentions = matcher.find(sentence)
    assert [(m.actor, m.text) for m in mentions] == [
        ("USA", "الولايات المتحدة الأمريكية"), ("USA", "وامريكا"), ("UN", "والأمم المتحدة"),
    ]  # fmt: skip
    assert all(sentence[m.start : m.end] == m.text for m in mentions)


def test_a_word_that_only_begins_like_a_name_is_no_mention(matcher):
    assert found(matcher, "الروسيات والصينيات مصطلحات") == []
    assert found(matcher, "تتحدث عن مصرف") == []


# ---------------------------------------------------------------------------- the rule model


@pytest.fixture(scope="module")
def model(inventory):
    return RuleHolderModel(inventory)


def test_the_subject_of_a_speech_verb_holds_the_stance_not_its_object(model):
    choice = model.choose("دعت وزارة الخارجية الروسية الولايات المتحدة إلى استئناف الحوار الثنائي.")
    assert choice.ids == ["RUS"] and choice.rule == "subject"


def test_subjects_joined_by_waw_are_a_joint_holder(model):
    assert model.choose("وقعت سنغافورة وماليزيا مذكرة تفاهم للتعاون السيبراني.").ids == ["SGP", "MYS"]


def test_the_party_after_maa_of_an_agreement_verb_holds_it_too(model):
    choice = model.choose("وقّعت الهيئة الوطنية في المملكة العربية السعودية مذكرة تفاهم مع نظيرتها في سلطنة عمان.")
    assert choice.ids == ["SAU", "OMN"] and choice.rule == "agreement"


def test_an_elided_subject_takes_the_previous_speaker_of_the_document(model):
    choices = model.predict_document(["قال المتحدث باسم الخارجية الصينية إن بلاده ترحب بالحوار.",
                                      "وأضاف أن الدول كلها يجب أن تشارك في صياغة القواعد."])  # fmt: skip
    assert [c.ids for c in choices] == [["CHN"], ["CHN"]] and choices[1].rule == "carry"


def test_first_person_opinion_is_the_author_and_an_interview_answer_the_guest(model):
    assert model.choose("وأرى أن المعاهدة ضرورية للدول الصغيرة.").ids == [AUTHOR]
    choices = model.predict_document(["تقول الباحثة في الحقوق الرقمية إن الاتفاقية تثير القلق.",
                                      "جواب: أرى أن النص يحتاج إلى ضمانات أقوى."])  # fmt: skip
    assert [c.ids for c in choices] == [["EXPERTS"], ["EXPERTS"]]


def test_no_candidate_and_a_vague_attribution_is_unknown(model):
    assert model.choose("واعترضت بعض الوفود على النص في الجلسة الختامية.").ids == [UNKNOWN]


def test_the_model_is_saved_with_its_inventory_and_loaded_back(tmp_path, inventory):
    params = RuleParameters(min_score=2.0, carry=False)
    save_holder_model(RuleHolderModel(inventory, params), tmp_path, {"fitted": False})
    saved = json.loads((tmp_path / HOLDERS_FILE).read_text(encoding="utf-8"))
    assert saved["inventory_sha256"] == inventory.digest and saved["parameters"]["min_score"] == 2.0
    loaded = load_holder_model(tmp_path)
    assert loaded.params == params and set(loaded.inventory.actors) == set(inventory.actors)
    sentence = "وأكد الوفد الأوكراني أنه لا يرى مجالا لقناة ثنائية."
    assert loaded.choose(sentence).ids == RuleHolderModel(inventory, params).choose(sentence).ids == ["UKR"]


def test_a_folder_without_holders_has_no_holder_model_and_a_changed_inventory_is_refused(tmp_path, inventory):
    assert load_holder_model(tmp_path) is None
    save_holder_model(RuleHolderModel(inventory), tmp_path)
    with (tmp_path / HOLDER_ACTORS_FILE).open("a", encoding="utf-8") as handle:
        handle.write("# edited\n")
    with pytest.raises(HolderModelError, match="SHA-256"):
        load_holder_model(tmp_path)


def gold_doc(doc_id: str, texts: list[str], holders: list[list[str] | None], slice_name: str = "news") -> GoldDocument:
    ids = [f"{doc_id}-{i}" for i in range(len(texts))]
    gold = {sid: {"un_treaty": h} for sid, h in zip(ids, holders, strict=True) if h is not None}
    return GoldDocument(doc_id, ids, texts, [slice_name] * len(texts), gold)


def test_fitting_searches_the_grid_on_gold_holders_only_when_there_are_enough(inventory):
    # an elided subject whose gold is the previous speaker: carry=true is right, carry=false is not
    docs = [gold_doc(f"d{k}", ["قال مندوب روسيا إن بلاده تؤيد اتفاقية أممية.", "وأضاف أن المفاوضات يجب أن تبدأ."],
                     [["RUS"], ["RUS"]]) for k in range(30)]  # fmt: skip
    cfg = {"kind": "rules", "inventory": str(SHIPPED), "parameters": {"carry": False},
           "fit": {"min_pairs": 50, "grid": {"carry": [False, True]}}}  # fmt: skip
    model, facts = fit_holder_model(cfg, docs)
    assert facts["fitted"] and model.params.carry and facts["accuracy"] == pytest.approx(1.0)
    model, facts = fit_holder_model(cfg, docs[:10])  # 20 pairs < min_pairs: as configured
    assert not facts["fitted"] and model.params.carry is False
    assert fit_holder_model({"kind": "none"}, docs)[0] is None


def test_metrics_count_exact_sets_per_type_and_the_precision_and_recall_of_author(model):
    docs = [
        gold_doc("a", ["وقعت سنغافورة وماليزيا مذكرة تفاهم.", "وأرى أن المعاهدة ضرورية."], [["SGP", "MYS"], [AUTHOR]]),
        gold_doc("b", ["قالت الصين إن القواعد ضرورية.", "أعلنت روسيا تأييدها للمعاهدة."], [["CHN"], ["USA"]], "seed"),
    ]
    metrics = holder_metrics(model, docs, n_resamples=200, seed=1)
    assert metrics["pairs"] == 4 and metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["slices"]["seed"]["accuracy"] == pytest.approx(0.5)
    assert metrics["types"]["joint"]["accuracy"] == pytest.approx(1.0)
    assert metrics["types"]["state"]["pairs"] == 2 and metrics["types"]["state"]["accuracy"] == pytest.approx(0.5)
    assert metrics[AUTHOR] == {"precision": 1.0, "recall": 1.0, "predicted": 1, "gold": 1}
    low, high = metrics["interval"]
    assert 0.0 <= low <= 0.75 <= high <= 1.0
