"""The Arabic sentence splitter and the text normaliser (diplostance.text)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diplostance.text import TEXT_PROCESSING_FILE, TextNormalization, normalize, split_sentences

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = [f.name for f in dataclasses.fields(TextNormalization)]


def texts(text: str) -> list[str]:
    return [s.text for s in split_sentences(text)]


def only(option: str) -> TextNormalization:
    """Normalisation with exactly one step enabled."""
    return TextNormalization(**{name: name == option for name in OPTIONS})


# --- splitter -----------------------------------------------------------------------


def test_splits_after_full_stop():
    assert texts("وصل الوزير. بدأ الاجتماع.") == ["وصل الوزير.", "بدأ الاجتماع."]


def test_splits_after_arabic_question_mark():
    assert texts("هل يوقع الطرفان؟ لم يتقرر بعد.") == ["هل يوقع الطرفان؟", "لم يتقرر بعد."]


def test_splits_after_exclamation_mark():
    assert texts("يا له من اتفاق! وقعه الطرفان.") == ["يا له من اتفاق!", "وقعه الطرفان."]


def test_splits_after_arabic_semicolon():
    assert texts("أولاً الحوار؛ ثانياً الثقة") == ["أولاً الحوار؛", "ثانياً الثقة"]


def test_splits_at_line_breaks_without_a_terminator():
    assert texts("الأمن السيبراني\nموسكو ٢٠٢٢") == ["الأمن السيبراني", "موسكو ٢٠٢٢"]


def test_keeps_a_decimal_number_together():
    assert texts("بلغ النمو 3.5 في المئة.") == ["بلغ النمو 3.5 في المئة."]


def test_keeps_a_dotted_date_together():
    assert texts("في 25.02.2021 وقع البلدان الاتفاق.") == ["في 25.02.2021 وقع البلدان الاتفاق."]


def test_keeps_an_abbreviation_with_its_name():
    assert texts("قال د. محمد إن الاتفاق مهم.") == ["قال د. محمد إن الاتفاق مهم."]


def test_keeps_a_straight_quotation_with_a_full_stop_together():
    text = 'قال الوزير "نؤيد الاتفاق. ونرحب بالحوار" ثم غادر.'
    assert texts(text) == [text]


@pytest.mark.parametrize("opening, closing", [("«", "»"), ("“", "”")], ids=["guillemets", "curly"])
def test_keeps_a_paired_quotation_with_a_full_stop_together(opening, closing):
    text = f"قال الوزير {opening}نؤيد الاتفاق. ونرحب بالحوار{closing} ثم غادر."
    assert texts(text) == [text]


def test_closing_guillemet_after_the_terminator_stays_with_its_sentence():
    # A quotation running over two paragraphs: the second line closes a quote it did not open.
    text = "وأضاف: «سنواصل الحوار\nمع جميع الشركاء.» وغادر الوفد."
    assert texts(text) == ["وأضاف: «سنواصل الحوار", "مع جميع الشركاء.»", "وغادر الوفد."]


def test_closing_bracket_after_the_terminator_stays_with_its_sentence():
    assert texts("(انظر الملحق.) ثم غادر الوفد.") == ["(انظر الملحق.)", "ثم غادر الوفد."]


def test_closing_straight_quote_after_the_terminator_stays_with_its_sentence():
    text = 'وأضاف: "سنواصل الحوار\nمع جميع الشركاء." وغادر الوفد. ثم عاد.'
    assert texts(text) == ['وأضاف: "سنواصل الحوار', 'مع جميع الشركاء."', "وغادر الوفد.", "ثم عاد."]


def test_drops_empty_and_whitespace_only_pieces():
    assert texts("  \n\nوصل الوفد.   \n \n  بدأ الحوار.  \n") == ["وصل الوفد.", "بدأ الحوار."]


def test_empty_text_has_no_sentences():
    assert split_sentences("") == []
    assert split_sentences(" \n\t ") == []


def test_offsets_slice_back_to_each_sentence():
    text = "  وصل الوزير.  هل يوقع؟\n  نعم!  "
    sentences = split_sentences(text)
    assert [(s.start, s.end) for s in sentences] == [(2, 13), (15, 23), (26, 30)]
    assert [text[s.start : s.end] for s in sentences] == [s.text for s in sentences]


def seed_spans() -> dict[str, list[tuple[int, int]]]:
    """doc_id -> the annotated (start, end) of each seed sentence, in sent_idx order."""
    spans: dict[str, list[tuple[int, int, int]]] = {}
    for line in (ROOT / "annotations" / "seeds.jsonl").read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        spans.setdefault(record["doc_id"], []).append((record["sent_idx"], record["start"], record["end"]))
    return {doc_id: [(start, end) for _, start, end in sorted(rows)] for doc_id, rows in spans.items()}


def test_splitter_reproduces_every_annotated_seed_sentence():
    annotated = seed_spans()
    seed_files = sorted((ROOT / "seeds").glob("*.txt"))
    assert sorted(annotated) == [path.stem for path in seed_files]
    matched = total = 0
    for path in seed_files:
        split = [(s.start, s.end) for s in split_sentences(path.read_text(encoding="utf-8"))]
        matched += len(set(split) & set(annotated[path.stem]))
        total += len(annotated[path.stem])
        assert split == annotated[path.stem], path.name
    assert (matched, total) == (49, 49)


# --- normaliser ---------------------------------------------------------------------


def test_remove_tatweel():
    assert normalize("الأمـــن", only("remove_tatweel")) == "الأمن"


def test_remove_diacritics():
    assert normalize("الأَمْنُ السِّيبْرَانِيُّ", only("remove_diacritics")) == "الأمن السيبراني"


def test_unify_digits_maps_arabic_indic_digits_to_latin():
    assert normalize("٠٩ ديسمبر ٢٠٢٢", only("unify_digits")) == "09 ديسمبر 2022"


def test_unify_digits_maps_extended_arabic_indic_digits_to_latin():
    assert normalize("۰۱۲۳۴۵۶۷۸۹", only("unify_digits")) == "0123456789"


def test_unify_punctuation_unifies_quotes_dashes_and_latin_marks():
    text = "«اتفاق» “جديد” ‘ثنائي’ روسيا–أمريكا, هل؟ نعم; ?"
    assert normalize(text, only("unify_punctuation")) == '"اتفاق" "جديد" \'ثنائي\' روسيا-أمريكا، هل؟ نعم؛ ؟'


def test_unify_punctuation_leaves_a_comma_between_digits():
    assert normalize("1,000 دولار, تقريباً", only("unify_punctuation")) == "1,000 دولار، تقريباً"


def test_collapse_whitespace():
    assert normalize("  الأمن \t\n السيبراني  ", only("collapse_whitespace")) == "الأمن السيبراني"


def test_fold_alef():
    assert normalize("أمن إلى آخر ٱلمعلومات", only("fold_alef")) == "امن الى اخر المعلومات"


def test_fold_yaa():
    assert normalize("على مستوى", only("fold_yaa")) == "علي مستوي"


def test_fold_taa_marbuta():
    assert normalize("اتفاقية ثنائية", only("fold_taa_marbuta")) == "اتفاقيه ثنائيه"


def test_letter_folding_is_off_by_default():
    text = "أكدت إدارة آسيا على الاتفاقية"
    assert normalize(text) == text


def test_no_step_enabled_leaves_text_unchanged():
    text = "  الأَمْـنُ «٢٠٢٢», على  "
    assert normalize(text, TextNormalization(**dict.fromkeys(OPTIONS, False))) == text


def test_options_save_and_load_round_trip(tmp_path):
    options = TextNormalization(remove_diacritics=False, fold_alef=True, fold_taa_marbuta=True)
    path = options.save(tmp_path)
    assert path == tmp_path / TEXT_PROCESSING_FILE
    assert TextNormalization.load(tmp_path) == options


def test_load_from_a_folder_without_options_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=TEXT_PROCESSING_FILE):
        TextNormalization.load(tmp_path)


def test_unknown_option_is_rejected_by_name():
    with pytest.raises(ValueError, match="fold_hamza"):
        TextNormalization.from_dict({"fold_alef": True, "fold_hamza": True})


# --- properties ---------------------------------------------------------------------

ARABIC_LETTERS = "ءآأؤإئابةتثجحخدذرزسشصضطظعغفقكلمنهوىيٱ"
DIACRITIC_MARKS = "\u064b\u064c\u064d\u064e\u064f\u0650\u0651\u0652\u0670"
DIGIT_CHARS = "0123456789٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹"
PUNCTUATION = ".؟?!؛;…,،\"«»“”‘’'()-–"
SPACES = " \n\t\r"
arabic_like = st.text(
    alphabet=st.sampled_from(ARABIC_LETTERS + DIACRITIC_MARKS + "\u0640" + DIGIT_CHARS + PUNCTUATION + SPACES),
    max_size=80,
)
any_text = st.one_of(
    arabic_like,
    st.text(max_size=80),
    st.lists(st.one_of(arabic_like, st.text(max_size=8)), max_size=6).map("".join),
)
normalizations = st.builds(TextNormalization, **{name: st.booleans() for name in OPTIONS})


def non_whitespace(text: str) -> str:
    return "".join(char for char in text if not char.isspace())


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_sentences_keep_every_non_whitespace_character_in_order(text):
    sentences = split_sentences(text)
    assert "".join(non_whitespace(s.text) for s in sentences) == non_whitespace(text)


@settings(max_examples=200, deadline=None)
@given(any_text)
def test_sentences_are_stripped_non_empty_slices_of_the_text(text):
    for sentence in split_sentences(text):
        assert text[sentence.start : sentence.end] == sentence.text
        assert sentence.text == sentence.text.strip()
        assert sentence.text


@settings(max_examples=200, deadline=None)
@given(any_text, normalizations)
def test_normalize_is_idempotent_for_every_combination_of_options(text, options):
    once = normalize(text, options)
    assert normalize(once, options) == once
