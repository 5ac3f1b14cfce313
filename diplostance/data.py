"""Stance datasets: the shipped annotations or any external file, as `datasets` objects.

Both loaders return a `StanceData`: the label space and a `DatasetDict` whose splits
have the columns `id, doc_id, text, source, labels` (`labels` holds one polarity
index per target, -100 where the target is not annotated).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
from hydra.utils import to_absolute_path

from diplostance.annotations import AnnotationError, load_corpus
from diplostance.errors import UserError
from diplostance.schema import LabelSpace

FORMATS = ("csv", "tsv", "jsonl", "parquet")
LAYOUTS = ("long", "wide")
FEATURES_COLUMNS = ("id", "doc_id", "text", "source", "labels")


class DataError(UserError, ValueError):
    """A data file or data config that cannot be used; the message names file, row and rule."""


@dataclass
class StanceData:
    labels: LabelSpace
    splits: datasets.DatasetDict
    description: str

    def split(self, name: str) -> datasets.Dataset:
        if name not in self.splits:
            raise DataError(f"split '{name}' is not available in {self.description} (have {list(self.splits)})")
        return self.splits[name]


def _to_dataset(rows: list[dict], labels: LabelSpace) -> datasets.Dataset:
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "doc_id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "source": datasets.Value("string"),
            "labels": datasets.Sequence(datasets.Value("int64"), length=len(labels.targets)),
        }
    )
    columns = {name: [row[name] for row in rows] for name in FEATURES_COLUMNS}
    return datasets.Dataset.from_dict(columns, features=features)


def load_data(cfg: Mapping) -> StanceData:
    """Dispatch on `cfg.kind` (`annotations` or `file`)."""
    kind = cfg.get("kind")
    if kind == "annotations":
        return load_annotations(to_absolute_path(cfg["directory"]), cfg.get("seeds") and to_absolute_path(cfg["seeds"]))
    if kind == "file":
        return load_file_data(cfg)
    raise DataError(f"data.kind must be 'annotations' or 'file', got {kind!r}")


def load_annotations(directory: str | Path, seeds_dir: str | Path | None = None) -> StanceData:
    corpus = load_corpus(directory, seeds_dir)
    if corpus.problems:
        raise AnnotationError(corpus.problems)
    by_split: dict[str, list[dict]] = {"train": [], "dev": [], "test": []}
    for record in corpus.records:
        data = record.data
        by_split[corpus.splits[data["doc_id"]]].append(
            {
                "id": data["id"],
                "doc_id": data["doc_id"],
                "text": data["text"],
                "source": data["source"],
                "labels": corpus.labels.encode(data["stances"]),
            }
        )
    splits = datasets.DatasetDict({name: _to_dataset(rows, corpus.labels) for name, rows in by_split.items() if rows})
    return StanceData(corpus.labels, splits, f"annotations in {directory}")


# ---------------------------------------------------------------- external files


def read_table(path: str | Path, fmt: str) -> pd.DataFrame:
    """Every cell as read; strings such as 'None' or 'NA' stay strings, never missing values."""
    path = Path(to_absolute_path(str(path)))
    if not path.is_file():
        raise DataError(f"{path}: data file not found")
    try:
        if fmt in ("csv", "tsv"):
            return pd.read_csv(
                path, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False, na_filter=False
            )
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False)
        if fmt == "parquet":
            return pd.read_parquet(path)
    except (ValueError, UnicodeDecodeError, OSError) as error:
        raise DataError(f"{path}: cannot be read as {fmt}: {error}") from error
    raise DataError(f"data.format must be one of {list(FORMATS)}, got {fmt!r}")


def _row_number(fmt: str, index: int) -> str:
    # Line numbers as a user sees them in an editor: CSV/TSV have a header line.
    return f"line {index + 2}" if fmt in ("csv", "tsv") else f"line {index + 1}" if fmt == "jsonl" else f"row {index}"


class _Spelling:
    """Maps a dataset's polarity spellings onto the configured polarities."""

    def __init__(self, polarities: tuple[str, ...], polarity_map: Mapping):
        self.polarities = polarities
        self.aliases = {str(k).strip().lower(): v for k, v in (polarity_map or {}).items()}
        bad = sorted({v for v in self.aliases.values() if v not in polarities})
        if bad:
            raise DataError(f"data.polarity_map maps to {bad}, which are not in data.polarities {list(polarities)}")

    def __call__(self, value) -> str | None:
        if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
            return None  # a genuinely missing cell: the target is not annotated
        key = str(value).strip().lower()
        if key in self.aliases:
            return self.aliases[key]
        matches = [p for p in self.polarities if p.lower() == key]
        if matches:
            return matches[0]
        raise KeyError(value)


def _require_columns(frame: pd.DataFrame, names: list[str], path: str) -> None:
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: column(s) {missing} not found; the file has {list(frame.columns)} "
            "(set data.columns.* to the file's column names)"
        )


def _rows_from_frame(frame: pd.DataFrame, path: str, cfg: Mapping, spell: _Spelling, split: str) -> list[dict]:
    """Rows as {id, doc_id, text, source, stances} whatever the layout."""
    fmt, layout, columns = cfg["format"], cfg["layout"], cfg["columns"]
    target_map = dict(cfg.get("target_map") or {})
    id_col, doc_col, source_col = columns.get("id"), columns.get("doc_id"), columns.get("source")
    _require_columns(frame, [c for c in (columns["text"], id_col, doc_col, source_col) if c], path)
    problems: list[str] = []

    def polarity(value, where: str, target: str):
        try:
            return spell(value)
        except KeyError:
            problems.append(
                f"{path}: {where}: unknown polarity {value!r} for target '{target}' "
                f"(known: {list(spell.polarities)}; add it to data.polarity_map)"
            )
            return None

    records: dict[str, dict] = {}
    for index, row in enumerate(frame.to_dict("records")):
        where = _row_number(fmt, index)
        text = row[columns["text"]]
        if not isinstance(text, str) or not text.strip():
            problems.append(f"{path}: {where}: empty text in column '{columns['text']}'")
            continue
        key = str(row[id_col]) if id_col else text
        record = records.setdefault(
            key,
            {
                "id": str(row[id_col]) if id_col else f"{split}-{len(records)}",
                "doc_id": str(row[doc_col]) if doc_col else None,
                "text": text,
                "source": str(row[source_col]) if source_col else "external",
                "stances": {},
            },
        )
        if layout == "long":
            _require_columns(frame, [columns["target"], columns["stance"]], path)
            target = str(row[columns["target"]]).strip()
            target = target_map.get(target, target)
            record["stances"][target] = polarity(row[columns["stance"]], where, target)
        else:
            if columns.get("targets"):
                _require_columns(frame, list(columns["targets"]), path)
                raw = {name: row[name] for name in columns["targets"]}
            else:
                _require_columns(frame, [columns["stances"]], path)
                raw = row[columns["stances"]]
                if isinstance(raw, str):
                    try:
                        raw = json.loads(raw)
                    except json.JSONDecodeError as error:
                        problems.append(
                            f"{path}: {where}: column '{columns['stances']}' is not a JSON object ({error})"
                        )
                        continue
                if not isinstance(raw, Mapping):
                    problems.append(f"{path}: {where}: column '{columns['stances']}' must hold an object, got {raw!r}")
                    continue
            for name, value in raw.items():
                target = target_map.get(name, name)
                record["stances"][target] = polarity(value, where, target)
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the data:\n" + "\n".join(problems))
    for record in records.values():
        record["doc_id"] = record["doc_id"] or record["id"]
    return list(records.values())


def _seeded_split(rows: list[dict], fractions: Mapping[str, float], by: str, seed: int) -> dict[str, list[dict]]:
    """Hold out shares of rows (or of whole documents) with a fixed seed."""
    if by not in ("row", "document"):
        raise DataError(f"data.split_by must be 'row' or 'document', got {by!r}")
    units = sorted({r["doc_id"] for r in rows}) if by == "document" else [r["id"] for r in rows]
    order = np.random.default_rng(seed).permutation(len(units))
    assignment, start = {}, 0
    for name, fraction in fractions.items():
        count = max(1, round(fraction * len(units))) if fraction > 0 else 0
        for i in order[start : start + count]:
            assignment[units[i]] = name
        start += count
    if start >= len(units):
        raise DataError(f"the held-out shares {dict(fractions)} leave no training data ({len(units)} {by}s)")
    key = "doc_id" if by == "document" else "id"
    split: dict[str, list[dict]] = {"train": []}
    for row in rows:
        split.setdefault(assignment.get(row[key], "train"), []).append(row)
    return split


def load_file_data(cfg: Mapping) -> StanceData:
    fmt, layout = cfg.get("format"), cfg.get("layout")
    if fmt not in FORMATS:
        raise DataError(f"data.format must be one of {list(FORMATS)}, got {fmt!r}")
    if layout not in LAYOUTS:
        raise DataError(f"data.layout must be one of {list(LAYOUTS)}, got {layout!r}")
    polarities = tuple(cfg["polarities"])
    spell = _Spelling(polarities, cfg.get("polarity_map"))
    files = {name: cfg.get(name) for name in ("train", "dev", "test") if cfg.get(name)}
    if cfg.get("path"):
        if files:
            raise DataError("give either data.path (one file, split with a seed) or data.train/dev/test, not both")
        rows = _rows_from_frame(read_table(cfg["path"], fmt), cfg["path"], cfg, spell, "all")
        fractions = {"test": cfg["test_fraction"], "dev": cfg["dev_fraction"]}
        by_split = _seeded_split(rows, fractions, cfg["split_by"], cfg["seed"])
    elif files:
        by_split = {
            name: _rows_from_frame(read_table(path, fmt), path, cfg, spell, name) for name, path in files.items()
        }
        if "train" in by_split and "dev" not in by_split and cfg.get("dev_fraction", 0) > 0:
            by_split.update(
                _seeded_split(by_split.pop("train"), {"dev": cfg["dev_fraction"]}, cfg["split_by"], cfg["seed"])
            )
    else:
        raise DataError("data=file needs data.train (and optionally data.dev, data.test) or data.path")

    found = tuple(dict.fromkeys(t for rows in by_split.values() for r in rows for t in r["stances"]))
    targets = tuple(cfg["targets"]) if cfg.get("targets") else found
    unknown = sorted(set(found) - set(targets))
    if unknown:
        raise DataError(
            f"targets {unknown} are in the data but not in data.targets {list(targets)} "
            "(add them, or rename them with data.target_map)"
        )
    labels = LabelSpace(targets, polarities)
    splits = datasets.DatasetDict(
        {
            name: _to_dataset([{**r, "labels": labels.encode(r["stances"])} for r in rows], labels)
            for name, rows in by_split.items()
            if rows
        }
    )
    return StanceData(labels, splits, f"{fmt} files {sorted(set(files.values()) | {cfg.get('path')} - {None})}")
