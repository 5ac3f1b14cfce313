"""The sentence splitter as it was before it was made linear (frozen copy, for comparison only).

`split_sentences` here scans the text before every full stop with a regex search from the
start of the text: quadratic in the article's length. Tests check that the linear splitter
in diplostance.text gives exactly the same sentences; benchmarks/split_sentences.py times both.
"""

from __future__ import annotations

import re

from diplostance.text import Sentence

TERMINATORS = ".؟?!؛;…"
CLOSERS = "\"'”’»)]}"
QUOTE_PAIRS = {"“": "”", "«": "»", "‘": "’"}
# Tokens that end in a full stop without ending the sentence (titles, initials).
ABBREVIATIONS = frozenset({"د", "أ", "م", "ص", "ب", "Dr", "Mr", "Mrs", "Ms", "Prof", "St", "No", "vs"})
WORD_BEFORE_RE = re.compile(r"(\w+)$")


def _is_abbreviation(text: str, dot: int) -> bool:
    """A full stop after a known abbreviation or a single Latin capital (U.S.)."""
    match = WORD_BEFORE_RE.search(text, 0, dot)
    if not match:
        return False
    word = match.group(1)
    followed_by_text = dot + 1 < len(text) and text[dot + 1] in " \t" and text[dot + 1 :].strip() != ""
    return followed_by_text and (word in ABBREVIATIONS or (len(word) == 1 and "A" <= word <= "Z"))


def _keeps_sentence_open(text: str, i: int) -> bool:
    """True when the terminator at i belongs inside a token (3.5, 25.02.2021, U.S.)."""
    char = text[i]
    if char == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
        return True
    return char == "." and _is_abbreviation(text, i)


def split_sentences(text: str) -> list[Sentence]:
    """Split Arabic news text into sentences with offsets into `text`.

    Splits after . ؟ ? ! ؛ … and at line breaks; keeps decimals, dates, abbreviations
    and quotations (a terminator inside an open quotation does not split) together;
    closing quotes and brackets after a terminator stay with their sentence; empty
    pieces are dropped. `text[s.start:s.end] == s.text` for every sentence.
    """
    boundaries: list[int] = []
    open_quotes: list[str] = []
    straight_quote_open = False
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == "\n":
            boundaries.append(i)
            open_quotes.clear()
            straight_quote_open = False
        elif char in QUOTE_PAIRS:
            open_quotes.append(QUOTE_PAIRS[char])
        elif open_quotes and char == open_quotes[-1]:
            open_quotes.pop()
        elif char == '"':
            straight_quote_open = not straight_quote_open
        elif char in TERMINATORS and not open_quotes and not straight_quote_open and not _keeps_sentence_open(text, i):
            j = i + 1
            while j < n and text[j] in TERMINATORS:
                j += 1
            while j < n and text[j] in CLOSERS:  # a quote right after the stop closes a quotation
                j += 1
            boundaries.append(j)
            i = j
            continue
        i += 1
    boundaries.append(n)

    sentences, start = [], 0
    for end in boundaries:
        piece = text[start:end]
        stripped = piece.strip()
        if stripped:
            offset = start + (len(piece) - len(piece.lstrip()))
            sentences.append(Sentence(offset, offset + len(stripped), stripped))
        start = end
    return sentences
