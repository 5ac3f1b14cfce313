"""normalize() skips str.translate when a regex finds no character its tables change: the output is the
earlier function's, for every option set, on random Arabic, Persian-digit, Latin and punctuation text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from diplostance.text import (
    ALEF_RE,
    DASHES_RE,
    DIACRITICS_RE,
    DIGITS,
    LATIN_COMMA_RE,
    QUOTES,
    TATWEEL,
    WHITESPACE_RE,
    TextNormalization,
    normalize,
)


def earlier_normalize(text: str, options: TextNormalization) -> str:
    """normalize() as it was before the pre-check: every enabled table applied to every text."""
    if options.remove_tatweel:
        text = text.replace(TATWEEL, "")
    if options.remove_diacritics:
        text = DIACRITICS_RE.sub("", text)
    if options.unify_digits:
        text = text.translate(DIGITS)
    if options.unify_punctuation:
        text = text.translate(QUOTES)
        text = DASHES_RE.sub("-", text)
        text = LATIN_COMMA_RE.sub("،", text).replace(";", "؛").replace("?", "؟")
    if options.fold_alef:
        text = ALEF_RE.sub("ا", text)
    if options.fold_yaa:
        text = text.replace("ى", "ي")
    if options.fold_taa_marbuta:
        text = text.replace("ة", "ه")
    if options.collapse_whitespace:
        text = WHITESPACE_RE.sub(" ", text).strip()
    return text


SPECIAL = "".join(map(chr, [*DIGITS, *QUOTES])) + TATWEEL + "\u064b\u0651\u0670\u2013\u2212,;?أإآٱىة \t\n\u00a0"
CHARACTERS = st.one_of(
    st.characters(min_codepoint=0x0600, max_codepoint=0x06FF),  # Arabic, with Arabic-Indic and Persian digits
    st.characters(min_codepoint=0x20, max_codepoint=0x7E),  # Latin letters, digits, punctuation
    st.sampled_from(SPECIAL),
    st.characters(),
)
OPTIONS = st.builds(TextNormalization, *[st.booleans()] * 8)


@settings(max_examples=400, deadline=None)
@given(st.text(CHARACTERS, max_size=60), OPTIONS)
def test_normalize_gives_the_earlier_functions_output(text, options):
    assert normalize(text, options) == earlier_normalize(text, options)


def test_the_pre_checks_cover_every_character_the_tables_change():
    from diplostance.text import DIGITS_RE, QUOTES_RE

    for table, pattern in ((DIGITS, DIGITS_RE), (QUOTES, QUOTES_RE)):
        assert all(pattern.fullmatch(chr(c)) for c in table)
        assert not pattern.search("abc ابت 123 - ، ؟")
