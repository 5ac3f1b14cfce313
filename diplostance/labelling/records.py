"""Predicting articles and building what the labeller writes: one record per sentence, one summary per
article, and their flat csv/parquet form. Both engines call `label_window`; only the execution differs."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from diplostance.labelling.inputs import Article
from diplostance.predictors.folder import predictor_token_facts
from diplostance.schema import LabelSpace
from diplostance.scoring import NEUTRAL_POLARITY
from diplostance.text import MAX_SENTENCE_CHARS, Sentence, split_sentences

PROB_DECIMALS = 6
CONVERT_CHUNK = 10_000  # records per chunk when converting the finished stream to csv/parquet
KEY_FIELDS = ("doc_id", "source", "sent_idx", "start", "end", "text")
HOLDERS_COLUMN = "holders"  # csv/parquet: a record's holders as JSON text (empty without a holder model)

Window = list[tuple[Article, list[Sentence]]]


def split_article(article: Article) -> tuple[Article, list[Sentence]]:
    return article, split_sentences(article.text)


def model_text(text: str) -> str:
    """What every model (each member of an ensemble alike) reads of a sentence: its first
    MAX_SENTENCE_CHARS characters, the most a training sentence may have; a transformer or encoder then
    reads its first max_length tokens of those, as in training. Longer sentences are labelled from their
    start and counted (`window_facts`); their records keep the whole text and offsets."""
    return text[:MAX_SENTENCE_CHARS]


def window_facts(predictor, window: Window, facts: dict | None = None) -> dict[str, int]:
    """For the window's sentences (each occurrence counted): how many the model cuts (over
    MAX_SENTENCE_CHARS characters or max_length tokens), and the word pieces it reads and how many of
    them are unknown (`predictors.folder.predictor_token_facts`; none for tf-idf). `facts` (model text ->
    [pieces, unknown, cut], made by the labeller's worker processes) saves tokenising here."""
    texts = [s.text for _, sentences in window for s in sentences]
    inputs = [model_text(t) for t in texts]
    if facts is None:
        unique = list(dict.fromkeys(inputs))
        found = predictor_token_facts(predictor, unique) if unique else None
        facts = dict(zip(unique, found.tolist(), strict=True)) if found is not None else {}
    counts = {"truncated": 0, "pieces": 0, "unknown_pieces": 0}
    for text, model_input in zip(texts, inputs, strict=True):
        pieces, unknown, cut = facts.get(model_input, (0, 0, 0))
        counts["truncated"] += int(bool(cut) or len(text) > MAX_SENTENCE_CHARS)
        counts["pieces"] += int(pieces)
        counts["unknown_pieces"] += int(unknown)
    return counts


def window_probs(predictor, window: Window, encoded: dict[str, list[int]] | None = None) -> np.ndarray:
    """(sentences, targets, polarities) for the window's sentences in order, from one prediction.

    `encoded` (sentence text -> token ids, made by `predictor.encode` in the labeller's worker
    processes) skips the normalisation and tokenisation here: `predictor.predict_encoded` takes them.
    """
    texts = [model_text(s.text) for _, sentences in window for s in sentences]
    if not texts:
        return np.empty((0, 0, 0))
    unique = list(dict.fromkeys(texts))  # repeated boilerplate (datelines, bylines) is predicted once
    row_of = {text: i for i, text in enumerate(unique)}
    if encoded is not None:
        probs = predictor.predict_encoded([encoded[t] for t in unique])
    else:
        probs = predictor.predict_proba(unique)
    return probs[[row_of[t] for t in texts]]


def label_window(predictor, window: Window, labels: LabelSpace, holders=None) -> list[tuple[list[dict], dict]]:
    """Each article's sentence records and summary, from one prediction over the window's sentences."""
    return window_records(window, window_probs(predictor, window), labels, holders)


def window_records(
    window: Window, probs: np.ndarray, labels: LabelSpace, holders=None
) -> list[tuple[list[dict], dict]]:
    """Each article's sentence records and summary from the window's probabilities (window_probs);
    `holders` (the model folder's holder model, diplostance.holders) adds each stance's holders."""
    out, row = [], 0
    for article, sentences in window:
        article_probs = probs[row : row + len(sentences)]
        out.append((list(sentence_records(article, sentences, article_probs, labels, holders)), doc_summary(
            article, article_probs, labels)))  # fmt: skip
        row += len(sentences)
    return out


def sentence_records(
    article: Article, sentences: Sequence[Sentence], probs: np.ndarray, labels: LabelSpace, holders=None
):
    """One output record per sentence: where it comes from (`source`: the file, or file:line for JSON Lines,
    so equal doc_ids from two inputs stay apart), offsets into the article text, stance and probabilities,
    and with a holder model each non-`none` stance's holders (ids, names, type, mention offsets)."""
    stances = probs.argmax(-1)
    found = None
    if holders is not None:
        from diplostance.holders import label_document

        named = [{t: labels.polarities[st[j]] for j, t in enumerate(labels.targets)} for st in stances.tolist()]
        found = label_document(holders, sentences, named, NEUTRAL_POLARITY)
    for i, (sentence, p, st) in enumerate(zip(sentences, probs.tolist(), stances.tolist(), strict=True)):
        record = {
            "doc_id": article.doc_id,
            "source": article.source,
            "sent_idx": i,
            "start": sentence.start,
            "end": sentence.end,
            "text": sentence.text,
            "stances": {t: labels.polarities[st[j]] for j, t in enumerate(labels.targets)},
            "probs": {
                t: {pol: round(p[j][q], PROB_DECIMALS) for q, pol in enumerate(labels.polarities)}
                for j, t in enumerate(labels.targets)
            },
        }
        if found is not None:
            record["holders"] = found[i]
        yield record


def doc_summary(article: Article, probs: np.ndarray, labels: LabelSpace) -> dict:
    """Per target: stance counts, mean probabilities, and the dominant non-`none` stance with its share
    of the article's sentences (null and 0 when no sentence takes a side; ties go to the higher mean)."""
    n = len(probs)
    stances = probs.argmax(-1)
    sided = [q for q, pol in enumerate(labels.polarities) if pol != NEUTRAL_POLARITY]
    targets = {}
    for j, target in enumerate(labels.targets):
        counts = np.bincount(stances[:, j], minlength=len(labels.polarities))
        mean = probs[:, j].mean(0)
        best = max(sided, key=lambda q: (counts[q], mean[q]), default=None)
        dominant = labels.polarities[best] if best is not None and counts[best] > 0 else None
        targets[target] = {
            "counts": {pol: int(counts[q]) for q, pol in enumerate(labels.polarities)},
            "mean_probs": {pol: round(float(mean[q]), PROB_DECIMALS) for q, pol in enumerate(labels.polarities)},
            "dominant": dominant,
            "share": round(float(counts[best]) / n, 4) if dominant else 0.0,
        }
    return {"doc_id": article.doc_id, "source": article.source, "sentences": n, "targets": targets}


# ---------------------------------------------------------------------------- flat form (csv, parquet)


def flat_columns(labels: LabelSpace) -> list[str]:
    """csv/parquet columns: the record's fields with `stances`/`probs` spelled stance.T and prob.T.P."""
    return [
        *KEY_FIELDS,
        *(f"stance.{t}" for t in labels.targets),
        *(f"prob.{t}.{p}" for t in labels.targets for p in labels.polarities),
        HOLDERS_COLUMN,
    ]


def flatten(record: dict, labels: LabelSpace) -> list:
    return [
        *(record[k] for k in KEY_FIELDS),
        *(record["stances"][t] for t in labels.targets),
        *(record["probs"][t][p] for t in labels.targets for p in labels.polarities),
        json.dumps(record["holders"], ensure_ascii=False) if "holders" in record else None,
    ]


def unflatten(row: dict, labels: LabelSpace) -> dict:
    """The nested record back from a flat row (a parquet or csv row as a dict)."""
    return {
        **{k: row[k] for k in KEY_FIELDS},
        "stances": {t: row[f"stance.{t}"] for t in labels.targets},
        "probs": {t: {p: row[f"prob.{t}.{p}"] for p in labels.polarities} for t in labels.targets},
        **({"holders": json.loads(row[HOLDERS_COLUMN])} if row.get(HOLDERS_COLUMN) else {}),
    }


def arrow_schema(labels: LabelSpace):
    import pyarrow as pa

    keys = [pa.string(), pa.string(), pa.int32(), pa.int64(), pa.int64(), pa.string()]
    types = keys + [pa.string()] * len(labels.targets)
    columns = flat_columns(labels)
    probs = [pa.float32()] * (len(columns) - len(types) - 1)
    return pa.schema(list(zip(columns, [*types, *probs, pa.string()], strict=True)))  # holders: JSON text


def records_table(records: Sequence[dict], labels: LabelSpace, schema=None):
    """The records as one pyarrow table of flat columns."""
    import pyarrow as pa

    schema = schema or arrow_schema(labels)
    if not records:
        return schema.empty_table()
    columns = zip(*(flatten(r, labels) for r in records), strict=True)
    arrays = [pa.array(values, f.type) for values, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _chunks(jsonl: Path, size: int = CONVERT_CHUNK) -> Iterator[list[dict]]:
    chunk = []
    with open(jsonl, encoding="utf-8") as handle:
        for line in handle:
            chunk.append(json.loads(line))
            if len(chunk) == size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def convert_records(jsonl: Path, target: Path, fmt: str, labels: LabelSpace) -> None:
    """Write the finished JSONL record stream as csv or parquet, a chunk at a time."""
    if fmt == "csv":
        with open(target, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(flat_columns(labels))
            for chunk in _chunks(jsonl):
                writer.writerows(flatten(r, labels) for r in chunk)
        return
    import pyarrow.parquet as pq

    schema = arrow_schema(labels)
    with pq.ParquetWriter(target, schema) as writer:  # with no rows it still writes the schema
        for chunk in _chunks(jsonl):
            writer.write_table(records_table(chunk, labels, schema))
