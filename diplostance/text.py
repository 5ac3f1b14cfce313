"""Arabic text processing shared by training, evaluation and labelling.

Two pieces live here: a configurable normaliser whose options are saved as JSON
beside every model (so labelling sees text exactly as training did), and a sentence
splitter for Arabic news text that returns character offsets into the original.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path

TEXT_PROCESSING_FILE = "text_processing.json"

TATWEEL = "\u0640"
# Harakat, tanwin, shadda, sukun, maddah/hamza marks, superscript alef, Quranic marks.
DIACRITICS_RE = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed]")
DIGITS = str.maketrans("٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹", "0123456789" * 2)
QUOTES = str.maketrans({"“": '"', "”": '"', "«": '"', "»": '"', "„": '"', "‘": "'", "’": "'"})
DASHES_RE = re.compile("[\u2010-\u2015\u2212]")
# Latin punctuation to its Arabic form; a comma between digits (1,000) stays.
LATIN_COMMA_RE = re.compile(r"(?<!\d),|,(?!\d)")
ALEF_RE = re.compile("[أإآٱ]")
WHITESPACE_RE = re.compile(r"\s+")
# str.translate looks every character up in a dict (slow on Arabic text, which rarely holds these
# characters): a regex search for any character a table changes lets unchanged text skip it.
DIGITS_RE = re.compile("[" + "".join(re.escape(chr(c)) for c in DIGITS) + "]")
QUOTES_RE = re.compile("[" + "".join(re.escape(chr(c)) for c in QUOTES) + "]")


@dataclass(frozen=True)
class TextNormalization:
    """Which normalisation steps run. Saved as `text_processing.json` beside a model."""

    remove_tatweel: bool = True
    remove_diacritics: bool = True
    unify_digits: bool = True
    unify_punctuation: bool = True
    fold_alef: bool = False
    fold_yaa: bool = False
    fold_taa_marbuta: bool = False
    collapse_whitespace: bool = True

    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / TEXT_PROCESSING_FILE
        path.write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> TextNormalization:
        path = Path(directory) / TEXT_PROCESSING_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: text-processing options missing (every model folder has one)")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), source=str(path))

    @classmethod
    def from_dict(cls, options: dict, source: str = "text normalisation options") -> TextNormalization:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"{source}: unknown option(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: bool(v) for k, v in options.items()})


def normalize(text: str, options: TextNormalization = TextNormalization()) -> str:
    """Apply the enabled steps. Idempotent: normalize(normalize(t)) == normalize(t)."""
    if options.remove_tatweel:
        text = text.replace(TATWEEL, "")
    if options.remove_diacritics:
        text = DIACRITICS_RE.sub("", text)
    if options.unify_digits and DIGITS_RE.search(text):
        text = text.translate(DIGITS)
    if options.unify_punctuation:
        if QUOTES_RE.search(text):
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


# A sentence longer than this is a whole article or a broken file, not a sentence.
MAX_SENTENCE_CHARS = 5000
# C0 and C1 control characters (NUL, escape, ...), except tab, line feed and carriage return.
CONTROL_CHARS_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def sentence_problem(text: str) -> str | None:
    """Why `text` cannot be a sentence (too long, a control character), or None."""
    if len(text) > MAX_SENTENCE_CHARS:
        return f"text is {len(text)} characters long, more than the {MAX_SENTENCE_CHARS} a sentence may have"
    control = CONTROL_CHARS_RE.search(text)
    if control:
        return f"text holds the control character U+{ord(control.group()):04X} at offset {control.start()}"
    return None


@dataclass(frozen=True)
class Sentence:
    start: int
    end: int
    text: str


TERMINATORS = ".؟?!؛;…"
CLOSERS = "\"'”’»)]}"
QUOTE_PAIRS = {"“": "”", "«": "»", "‘": "’"}
# Tokens that end in a full stop without ending the sentence (titles, initials).
ABBREVIATIONS = frozenset({"د", "أ", "م", "ص", "ب", "Dr", "Mr", "Mrs", "Ms", "Prof", "St", "No", "vs"})


def _word_before(text: str, end: int) -> str:
    """The run of word characters (regex \\w: alphanumerics and `_`) that ends at `end`.

    A backward scan, not a regex search from the start of the text: the search made the
    splitter quadratic in the article's length (a 252 kB article took 6.8 s).
    """
    start = end
    while start > 0 and (text[start - 1].isalnum() or text[start - 1] == "_"):
        start -= 1
    return text[start:end]


def _is_abbreviation(text: str, dot: int, content_end: int) -> bool:
    """A full stop after a known abbreviation or a single Latin capital (U.S.), with more text after it.

    `content_end` is len(text.rstrip()): text follows the stop when a non-space character
    lies beyond the space right after it.
    """
    followed_by_text = dot + 1 < len(text) and text[dot + 1] in " \t" and content_end > dot + 2
    if not followed_by_text:
        return False
    word = _word_before(text, dot)
    return word in ABBREVIATIONS or (len(word) == 1 and "A" <= word <= "Z")


def _keeps_sentence_open(text: str, i: int, content_end: int) -> bool:
    """True when the terminator at i belongs inside a token (3.5, 25.02.2021, U.S.)."""
    char = text[i]
    if char == "." and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit():
        return True
    return char == "." and _is_abbreviation(text, i, content_end)


def split_sentences(text: str) -> list[Sentence]:
    """Split Arabic news text into sentences with offsets into `text`.

    Splits after . ؟ ? ! ؛ … and at line breaks; keeps decimals, dates, abbreviations
    and quotations (a terminator inside an open quotation does not split) together;
    closing quotes and brackets after a terminator stay with their sentence; empty
    pieces are dropped. `text[s.start:s.end] == s.text` for every sentence. Linear time.
    """
    content_end = len(text.rstrip())
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
        elif (
            char in TERMINATORS
            and not open_quotes
            and not straight_quote_open
            and not _keeps_sentence_open(text, i, content_end)
        ):
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
