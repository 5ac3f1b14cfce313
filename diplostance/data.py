"""Stance datasets: the shipped annotations or any external file, as `datasets` objects.

Both loaders return a `StanceData`: the label space and a `DatasetDict` whose splits
have the columns `id, doc_id, text, source, slice, labels` (`labels` holds one polarity
index per target, -100 where the target is not annotated; `slice` names the part of the
data a report shows apart: `seed`, `composed`, `news` (composed news-register articles),
`annotated`, or an external file's source).
"""

from __future__ import annotations

import glob
import json
import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import yaml
from hydra.utils import to_absolute_path

from diplostance.annotations import AnnotationError, load_corpus, record_slice
from diplostance.errors import BadDataError
from diplostance.schema import LabelSpace
from diplostance.text import sentence_problem

log = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "json", "jsonl", "parquet")
TARGET_FROM = ("column", "filename")
DUPLICATE_RULES = ("error", "first", "last", "majority", "drop")  # data.duplicates: conflicting labels
LAYOUTS = ("long", "wide")
FEATURES_COLUMNS = ("id", "doc_id", "text", "source", "slice", "labels")


class DataError(BadDataError, ValueError):
    """A data file that cannot be used; the message names file, row and rule (exit status 1)."""


class DataConfigError(DataError):
    """A data config that cannot work, or a data file that is not there (exit status 2)."""

    exit_code = 2


@dataclass
class StanceData:
    labels: LabelSpace
    splits: datasets.DatasetDict
    description: str
    warnings: list[str] = field(default_factory=list)  # suspicious but legal input; reports repeat them
    refit_on_train_dev: bool = False  # data.refit_on_train_dev: tf-idf is refit on train+dev after selection
    # What each split was read from (a report names the evaluated split's files, not every file read)
    split_sources: dict[str, str] = field(default_factory=dict)
    # Sentences per split and, for data files, the label counts as read and as mapped (metrics.json)
    summary: dict = field(default_factory=dict)
    # Gold stance holders by sentence id ({target: [actor ids]}), for the annotation records that have them
    holders: dict = field(default_factory=dict)

    def split(self, name: str) -> datasets.Dataset:
        if name not in self.splits:
            raise DataConfigError(f"split '{name}' is not available in {self.description} (have {list(self.splits)})")
        return self.splits[name]

    def describe(self, name: str) -> str:
        """Where split `name` came from: its own files when known, else the whole dataset's description."""
        return self.split_sources.get(name, self.description)


def _to_dataset(rows: list[dict], labels: LabelSpace) -> datasets.Dataset:
    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "doc_id": datasets.Value("string"),
            "text": datasets.Value("string"),
            "source": datasets.Value("string"),
            "slice": datasets.Value("string"),
            "labels": datasets.Sequence(datasets.Value("int64"), length=len(labels.targets)),
        }
    )
    rows = [{"slice": row["source"], **row} for row in rows]  # an external file's slice is its source
    columns = {name: [row[name] for row in rows] for name in FEATURES_COLUMNS}
    return datasets.Dataset.from_dict(columns, features=features)


def load_data(cfg: Mapping) -> StanceData:
    """Dispatch on `cfg.kind` (`annotations` or `file`)."""
    kind = cfg.get("kind")
    if kind == "annotations":
        data = load_annotations(to_absolute_path(cfg["directory"]), cfg.get("seeds") and to_absolute_path(cfg["seeds"]))
    elif kind == "file":
        data = load_file_data(cfg)
    else:
        raise DataConfigError(f"data.kind must be 'annotations' or 'file', got {kind!r}")
    data.refit_on_train_dev = bool(cfg.get("refit_on_train_dev", False))
    return data


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
                "slice": record_slice(data),
                "labels": corpus.labels.encode(data["stances"]),
            }
        )
    splits = datasets.DatasetDict({name: _to_dataset(rows, corpus.labels) for name, rows in by_split.items() if rows})
    summary = {"sentences": {name: len(split) for name, split in splits.items()}}
    holders = {r.data["id"]: r.data["holders"] for r in corpus.records if "holders" in r.data}
    return StanceData(corpus.labels, splits, f"annotations in {directory}", summary=summary, holders=holders)


# ---------------------------------------------------------------- external files


def _read_json(path: Path) -> pd.DataFrame:
    """A JSON array of records, an object of columns ({column: {row: value}}, as pandas writes it), or JSON Lines."""
    text = path.read_text(encoding="utf-8-sig")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        whole = None  # JSON Lines, or broken JSON: read line by line below
    if isinstance(whole, list):
        bad = [i + 1 for i, record in enumerate(whole) if not isinstance(record, dict)]
        if bad:
            raise DataError(f"{path}: record {bad[0]} is not a JSON object ({len(bad)} such record(s))")
        return pd.DataFrame.from_records(whole)
    if isinstance(whole, dict):
        if whole and all(isinstance(column, dict) for column in whole.values()):
            return pd.DataFrame({name: pd.Series(column, dtype=object) for name, column in whole.items()})
        raise DataError(
            f"{path}: a JSON object must map each column to {{row: value}} (as pandas writes it); "
            "otherwise give an array of records or JSON Lines"
        )
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}: line {number}: not JSON ({error.msg}); data.format=json reads a JSON array, "
                "an object of columns or JSON Lines"
            ) from error
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number}: not a JSON object")
        records.append(record)
    return pd.DataFrame.from_records(records)


def read_table(path: str | Path, fmt: str) -> pd.DataFrame:
    """Every cell as read; strings such as 'None' or 'NA' stay strings, never missing values."""
    path = Path(to_absolute_path(str(path)))
    if not path.is_file():
        raise DataConfigError(f"{path}: data file not found")
    if fmt == "jsonl":
        _refuse_whole_json(path)
    try:
        if fmt in ("csv", "tsv"):
            return pd.read_csv(
                path, sep="\t" if fmt == "tsv" else ",", dtype=str, keep_default_na=False, na_filter=False
            )
        if fmt == "json":
            return _read_json(path)
        if fmt == "jsonl":
            return pd.read_json(path, lines=True, dtype=False, encoding="utf-8-sig")  # a BOM is accepted
        if fmt == "parquet":
            return pd.read_parquet(path)
    except (ValueError, UnicodeDecodeError, OSError) as error:
        raise DataError(f"{path}: cannot be read as {fmt}: {error}") from error
    raise DataConfigError(f"data.format must be one of {list(FORMATS)}, got {fmt!r}")


def _refuse_whole_json(path: Path) -> None:
    """data.format=jsonl on a JSON array (or a pandas object of columns) would read one row of numbered
    "columns" per line: say which format the file is in instead."""
    with path.open("rb") as f:
        head = f.read(4096).decode("utf-8-sig", errors="replace").lstrip()
    whole = None
    if head.startswith("{"):  # JSON Lines starts with an object too: only a single object of columns is refused
        try:
            whole = json.loads(path.read_text(encoding="utf-8-sig"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return  # several lines of objects: JSON Lines
    if head.startswith("[") or (
        isinstance(whole, dict) and whole and all(isinstance(column, dict) for column in whole.values())
    ):
        shape = "a JSON array" if head.startswith("[") else "an object of columns"
        raise DataConfigError(f"{path}: holds {shape}, not JSON Lines (one object per line): use data.format=json")


def _row_number(fmt: str, index: int) -> str:
    # Line numbers as a user sees them in an editor: CSV/TSV have a header line.
    if fmt in ("csv", "tsv"):
        return f"line {index + 2}"
    return f"line {index + 1}" if fmt == "jsonl" else f"record {index + 1}" if fmt == "json" else f"row {index}"


class _Spelling:
    """Maps a dataset's polarity spellings onto the configured polarities."""

    def __init__(self, polarities: tuple[str, ...], polarity_map: Mapping, origins: Mapping[str, str] | None = None):
        self.polarities = polarities
        self.aliases = {str(k).strip().lower(): v for k, v in (polarity_map or {}).items()}
        # where each alias was given (the map file or data.polarity_map): named when a map merges two labels
        self.origins = {str(k).strip().lower(): v for k, v in (origins or {}).items()}
        bad = sorted({v for v in self.aliases.values() if v not in polarities})
        if bad:
            raise DataConfigError(
                f"data.polarity_map (or data.polarity_map_file) maps to {bad}, which are not in data.polarities "
                f"{list(polarities)}"
            )

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


@dataclass
class _Tally:
    """Labelled rows per spelling as read and per label as mapped (data.polarity_map, data.target_map)."""

    polarity_read: Counter = field(default_factory=Counter)  # spelling as written (stripped) -> rows
    polarity_mapped: Counter = field(default_factory=Counter)
    polarity_sources: dict = field(default_factory=dict)  # spelling, case-folded -> (as first written, polarity)
    target_read: Counter = field(default_factory=Counter)
    target_mapped: Counter = field(default_factory=Counter)
    target_sources: dict = field(default_factory=dict)  # target name as read -> name used

    def summary(self) -> dict:
        return {
            "polarity": {"as_read": dict(self.polarity_read), "mapped": dict(self.polarity_mapped)},
            "target": {"as_read": dict(self.target_read), "mapped": dict(self.target_mapped)},
        }


def _rows_from_frame(
    frame: pd.DataFrame, path: str, cfg: Mapping, spell: _Spelling, split: str, warnings: list[str] | None = None
) -> list[dict]:
    """The rows of one table (see `_rows_from_frames`)."""
    return _rows_from_frames([(frame, path, None)], cfg, spell, split, warnings)


def _rows_from_frames(
    tables: list[tuple[pd.DataFrame, str, str | None]],
    cfg: Mapping,
    spell: _Spelling,
    split: str,
    warnings: list[str] | None = None,
    tally: _Tally | None = None,
) -> list[dict]:
    """Rows as {id, doc_id, text, source, stances, where} whatever the layout.

    `tables` holds (frame, path, target): with a target (data.target_from=filename) every
    row of that table labels it, and the table needs no target column. A sentence given
    twice (same id, or same text, in one table or across tables) must carry the same
    labels: conflicting labels are an error naming both lines, a repeat with the same
    labels a warning. Without data.columns.id a column named `id` names the sentences
    (ids in predictions.jsonl) when its values are unique; sentences are then still
    grouped by text. `tally` counts the labels as read and as mapped.
    """
    fmt, layout, columns = cfg["format"], cfg["layout"], cfg["columns"]
    target_map, target_origins = mapping_with_origins(cfg, "target_map")
    tally = tally if tally is not None else _Tally()
    id_col, doc_col, source_col = columns.get("id"), columns.get("doc_id"), columns.get("source")
    # a field named `id` when data.columns.id is not given: the record's name, not its grouping key
    id_field = None if id_col else "id"
    default_source = str(cfg.get("source") or "external")
    problems: list[str] = []
    repeats: list[tuple[str, str]] = []  # (where, where first given)
    given: dict[tuple[str, str], tuple[str, str]] = {}  # (sentence key, target) -> (where, polarity)
    votes: dict[tuple[str, str], list[tuple[str, str]]] = {}  # (sentence key, target) -> every (where, polarity)
    conflicts: set[tuple[str, str]] = set()
    rule = cfg.get("duplicates") or "error"
    records: dict[str, dict] = {}

    def polarity(value, where: str, target: str):
        try:
            mapped = spell(value)
        except KeyError:
            problems.append(
                f"{where}: unknown polarity {value!r} for target '{target}' "
                f"(known: {list(spell.polarities)}; add it to data.polarity_map or data.polarity_map_file)"
            )
            return None
        if mapped is not None:
            written = str(value).strip()
            tally.polarity_read[written] += 1
            tally.polarity_mapped[mapped] += 1
            tally.polarity_sources.setdefault(written.lower(), (written, mapped))
        return mapped

    def assign(record: dict, key: str, read_as: str, value, where: str) -> None:
        """Record the label `value` (as written) that row `where` gives target `read_as` (as named in the data)."""
        target = target_map.get(read_as, read_as)
        tally.target_sources.setdefault(read_as, target)
        value = polarity(value, where, target)
        if value is None:  # an empty cell: this row does not annotate the target
            record["stances"].setdefault(target, None)
            return
        tally.target_read[read_as] += 1
        tally.target_mapped[target] += 1
        votes.setdefault((key, target), []).append((where, value))
        first = given.setdefault((key, target), (where, value))
        if first[0] == where:
            record["stances"][target] = value
            record["lines"][target] = where  # the row that labels this target
        elif first[1] == value:
            repeats.append((where, first[0]))
        elif rule != "error":
            conflicts.add((key, target))  # resolved by data.duplicates once every row is read
        else:
            problems.append(
                f"{where}: conflicting labels for the same sentence: target '{target}' is {value!r} here "
                f"but {first[1]!r} at {_short(first[0], where)} (keep one row per sentence and target, or set "
                "data.duplicates=first|last|majority|drop)"
            )

    for frame, path, file_target in tables:
        needed = [columns["text"], id_col, doc_col, source_col]
        if layout == "long":
            needed += [columns["stance"]] + ([columns["target"]] if file_target is None else [])
        _require_columns(frame, [c for c in needed if c], path)
        if frame.empty:
            raise DataError(f"{path}: no data rows (a header only?)")
        for index, row in enumerate(frame.to_dict("records")):
            where = f"{path}: {_row_number(fmt, index)}"
            text = row[columns["text"]]
            if not isinstance(text, str) or not text.strip():
                problems.append(f"{where}: empty text in column '{columns['text']}'")
                continue
            problem = sentence_problem(text)
            if problem:  # a control character, or longer than text.MAX_SENTENCE_CHARS (validate's limit too)
                problems.append(f"{where}: {problem}")
                continue
            key = str(row[id_col]) if id_col else text
            record = records.setdefault(
                key,
                {
                    "id": str(row[id_col]) if id_col else f"{split}-{len(records)}",
                    "doc_id": str(row[doc_col]) if doc_col else None,
                    "text": text,
                    "source": str(row[source_col]) if source_col else default_source,
                    "stances": {},
                    "where": where,
                    "lines": {},
                    "named": _cell_text(row.get(id_field)) if id_field else None,
                },
            )
            if record["text"] != text:
                problems.append(f"{where}: id {key!r} has another text at {record['where']} (ids must be unique)")
                continue
            if layout == "long":
                read_as = file_target if file_target is not None else str(row[columns["target"]]).strip()
                assign(record, key, read_as, row[columns["stance"]], where)
                continue
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
                        problems.append(f"{where}: column '{columns['stances']}' is not a JSON object ({error})")
                        continue
                if not isinstance(raw, Mapping):
                    problems.append(f"{where}: column '{columns['stances']}' must hold an object, got {raw!r}")
                    continue
            for name, value in raw.items():
                assign(record, key, str(name), value, where)
    resolved: list[tuple[str, str, int]] = []  # (where first given, target, rows) per conflict data.duplicates resolved
    for key, target in sorted(conflicts):
        record, given_votes = records[key], votes[(key, target)]
        record["stances"][target] = _resolve(given_votes, rule)
        resolved.append((given_votes[0][0], target, len(given_votes)))
    if id_col:  # the same text under two ids is the same sentence: its labels must agree too
        by_text: dict[str, list[dict]] = {}
        for record in records.values():
            by_text.setdefault(record["text"], []).append(record)
        for group in (g for g in by_text.values() if len(g) > 1):
            first = group[0]
            for target in dict.fromkeys(t for r in group for t in r["stances"]):
                labelled = [r for r in group if r["stances"].get(target) is not None]
                if len({r["stances"][target] for r in labelled}) > 1 and rule != "error":
                    given_votes = [(r["lines"].get(target, r["where"]), r["stances"][target]) for r in labelled]
                    for r in labelled:
                        r["stances"][target] = _resolve(given_votes, rule)
                    resolved.append((given_votes[0][0], target, len(given_votes)))
                    continue
                for record in group[1:]:
                    value, other = record["stances"].get(target), first["stances"].get(target)
                    if value is not None and other is not None and value != other:
                        problems.append(
                            f"{record['where']}: conflicting labels for the same sentence: target '{target}' is "
                            f"{value!r} here but {other!r} at {_short(first['where'], record['where'])} "
                            f"(id {first['id']!r}; data.duplicates=first|last|majority|drop resolves it)"
                        )
                    elif value is not None and value == other:
                        repeats.append((record["where"], first["where"]))
    # Before the problems: a map that merges two labels explains the conflicts it causes. The tally holds
    # every split read so far, so a merge across splits is found too.
    check_merging_maps(tally, spell, target_origins, bool(cfg.get("allow_merging_maps", False)))
    if problems:
        raise DataError(f"{len(problems)} problem(s) in the data:\n" + "\n".join(problems))
    if repeats and warnings is not None:
        where, first = repeats[0]
        warnings.append(
            f"{where.split(': ', 1)[0]}: {len(repeats)} row(s) repeat a sentence with the same labels (first: "
            f"{where.split(': ', 1)[1]} repeats {_short(first, where)}); each sentence is used once"
        )
    if resolved and warnings is not None:
        warnings.append(
            f"{len(resolved)} sentence/target pair(s) had conflicting labels over {sum(n for *_, n in resolved)} "
            f"row(s), resolved by data.duplicates={rule} (first: target '{resolved[0][1]}' at {resolved[0][0]})"
        )
    named = [record.pop("named") for record in records.values()]
    if id_field and all(named) and len(set(named)) == len(named):  # the file's own ids, when they name sentences
        for record, name in zip(records.values(), named, strict=True):
            record["id"] = name
    elif id_field and any(named):
        log.info("%s: the '%s' field does not name each sentence once: ids are generated", tables[0][1], id_field)
    for record in records.values():
        record["doc_id"] = record["doc_id"] or record["id"]
    return list(records.values())


def _cell_text(value) -> str | None:
    """A cell as text; None for a missing or empty one."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value).strip() or None


MERGE_FIX = "fix the map, or set data.allow_merging_maps=true if merging them is meant"
# configs/data/file.yaml's polarity_map: synonyms meant to be merged (`FAVOR` and `with` are one polarity).
# Any other entry that sends a spelling onto a polarity the data also spells otherwise is a merge to refuse.
SHIPPED_POLARITY_SYNONYMS = {
    **dict.fromkeys(("with", "pro", "support", "favour"), "favor"),
    **dict.fromkeys(("con", "anti", "oppose"), "against"),
    **dict.fromkeys(("neither", "neutral"), "none"),
}


def check_merging_maps(tally: _Tally, spell: _Spelling, target_origins: Mapping, allow: bool) -> None:
    """Refuse a polarity or target map that sends two of the data's labels to one (mapping `against`'s
    spelling to `favor` turns every `against` into `favor`), unless data.allow_merging_maps says it is meant.

    The shipped polarity synonyms merge by design; a map entry of the user's (a map file, a data config's
    polarity_map) must not send a spelling onto a polarity that another spelling of the data also gives."""
    if allow:
        return
    polarity_rows = Counter()
    for written, rows in tally.polarity_read.items():
        polarity_rows[written.lower()] += rows

    def users_entry(key: str) -> bool:
        return key in spell.aliases and SHIPPED_POLARITY_SYNONYMS.get(key) != spell.aliases[key]

    by_polarity: dict[str, list[str]] = {}
    for key, (_written, polarity) in tally.polarity_sources.items():
        by_polarity.setdefault(polarity, []).append(key)
    for polarity, keys in by_polarity.items():
        mapped = [k for k in keys if users_entry(k)]
        if len(keys) > 1 and mapped:
            keys = sorted(keys, key=lambda k: k not in mapped)  # a user's entry first: it is the one to check
            origin = spell.origins.get(mapped[0], "data.polarity_map")
            first, second = (tally.polarity_sources[k][0] for k in keys[:2])
            raise DataConfigError(
                f"{origin}: maps the data's polarity spellings {first!r} ({polarity_rows[keys[0]]} row(s)) and "
                f"{second!r} ({polarity_rows[keys[1]]} row(s)) to the one polarity {polarity!r}: {MERGE_FIX}"
            )
    by_target: dict[str, list[str]] = {}
    for name in tally.target_read:  # targets that label at least one row
        by_target.setdefault(tally.target_sources[name], []).append(name)
    for target, names in by_target.items():
        if len(names) > 1:
            origin = next((target_origins[n] for n in names if n in target_origins), "data.target_map")
            first, second = names[:2]
            raise DataConfigError(
                f"{origin}: maps the data's targets {first!r} ({tally.target_read[first]} row(s)) and {second!r} "
                f"({tally.target_read[second]} row(s)) to the one target {target!r}: {MERGE_FIX}"
            )


def _resolve(votes: list[tuple[str, str]], rule: str) -> str | None:
    """One polarity from a sentence's conflicting (where, polarity) rows; `drop` leaves the target unannotated."""
    if rule == "drop":
        return None
    if rule in ("first", "last"):
        return votes[0 if rule == "first" else -1][1]
    counts = Counter(value for _, value in votes)  # majority; a tie goes to the polarity given first
    return next(value for _, value in votes if counts[value] == max(counts.values()))


def _short(where: str, here: str) -> str:
    """`where` without its file name when `here` is in the same file (messages name the file once)."""
    file, _, rest = where.partition(": ")
    return rest if here.partition(": ")[0] == file else where


def _seeded_split(rows: list[dict], fractions: Mapping[str, float], by: str, seed: int) -> dict[str, list[dict]]:
    """Hold out shares of rows (or of whole documents) with a fixed seed."""
    if by not in ("row", "document"):
        raise DataConfigError(f"data.split_by must be 'row' or 'document', got {by!r}")
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


def mapping_option(cfg: Mapping, name: str) -> dict[str, str]:
    """data.<name> merged with the YAML or JSON file data.<name>_file (the file's entries win).

    A file is the way to give keys a Hydra override cannot spell: Arabic words, names with spaces.
    """
    return mapping_with_origins(cfg, name)[0]


def mapping_with_origins(cfg: Mapping, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """`mapping_option`, and where each entry was given: the map file's path or `data.<name>`."""
    merged = mapping_entries(cfg, name)
    origins = dict.fromkeys(merged, f"data.{name}")
    file = cfg.get(f"{name}_file")
    if file:
        from_file = mapping_entries(cfg, name, file_only=True)
        merged.update(from_file)
        origins.update(dict.fromkeys(from_file, str(Path(to_absolute_path(str(file))))))
    return merged, origins


def mapping_entries(cfg: Mapping, name: str, file_only: bool = False) -> dict[str, str]:
    """data.<name>'s own entries, or (file_only) those of the file data.<name>_file."""
    if not file_only:
        return {str(k): v for k, v in (cfg.get(name) or {}).items()}
    path = Path(to_absolute_path(str(cfg.get(f"{name}_file"))))
    if not path.is_file():
        raise DataConfigError(f"{path}: data.{name}_file not found")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise DataConfigError(f"{path}: data.{name}_file is not YAML or JSON: {error}") from error
    if not isinstance(loaded, Mapping) or not all(isinstance(v, str) for v in loaded.values()):
        raise DataConfigError(
            f"{path}: data.{name}_file must map each spelling to a name, as in `Against: against` "
            f"(got {type(loaded).__name__})"
        )
    return {str(k).strip(): v.strip() for k, v in loaded.items()}


def data_files(spec, option: str) -> list[str]:
    """The files of a data option: a path, a glob pattern (`train/*/*.json`) or a list of either, sorted."""
    specs = [spec] if isinstance(spec, str | Path) else list(spec)
    files: list[str] = []
    for item in specs:
        item = str(item)
        if glob.has_magic(item):
            matches = sorted(glob.glob(to_absolute_path(item), recursive=True))
            if not matches:
                raise DataConfigError(f"data.{option}: no file matches {item!r}")
            files += matches
        else:
            files.append(item)
    return files


def _read_tables(spec, option: str, cfg: Mapping) -> tuple[list[tuple[pd.DataFrame, str, str | None]], list[str]]:
    """(frame, path, target) for each file of a data option; the target is the file name's stem when
    data.target_from=filename."""
    by_name = cfg.get("target_from", "column") == "filename"
    files = data_files(spec, option)
    return [(read_table(f, cfg["format"]), f, Path(f).stem if by_name else None) for f in files], files


def load_file_data(cfg: Mapping) -> StanceData:
    fmt, layout = cfg.get("format"), cfg.get("layout")
    if fmt not in FORMATS:
        raise DataConfigError(f"data.format must be one of {list(FORMATS)}, got {fmt!r}")
    if layout not in LAYOUTS:
        raise DataConfigError(f"data.layout must be one of {list(LAYOUTS)}, got {layout!r}")
    if (cfg.get("duplicates") or "error") not in DUPLICATE_RULES:
        raise DataConfigError(f"data.duplicates must be one of {list(DUPLICATE_RULES)}, got {cfg.get('duplicates')!r}")
    target_from = cfg.get("target_from", "column")
    if target_from not in TARGET_FROM:
        raise DataConfigError(f"data.target_from must be one of {list(TARGET_FROM)}, got {target_from!r}")
    if target_from == "filename" and layout != "long":
        raise DataConfigError("data.target_from=filename needs data.layout=long (one stance column per file)")
    polarities = tuple(cfg["polarities"])
    spell = _Spelling(polarities, *mapping_with_origins(cfg, "polarity_map"))
    warnings: list[str] = []
    given = {name: cfg.get(name) for name in ("train", "dev", "test") if cfg.get(name)}
    read: list[str] = []
    tally = _Tally()
    sources: dict[str, str] = {}  # split -> what it was read from
    if cfg.get("path"):
        if given:
            raise DataConfigError(
                "give either data.path (one file, split with a seed) or data.train/dev/test, not both"
            )
        tables, read = _read_tables(cfg["path"], "path", cfg)
        rows = _rows_from_frames(tables, cfg, spell, "all", warnings, tally)
        fractions = {"test": cfg["test_fraction"], "dev": cfg["dev_fraction"]}
        by_split = _seeded_split(rows, fractions, cfg["split_by"], cfg["seed"])
        sources = {name: f"the seeded {name} share of {_files_text(fmt, read)}" for name in by_split}
    elif given:
        by_split = {}
        for name, spec in given.items():
            tables, files = _read_tables(spec, name, cfg)
            by_split[name] = _rows_from_frames(tables, cfg, spell, name, warnings, tally)
            read += files
            sources[name] = _files_text(fmt, files)
        if "train" in by_split and "dev" not in by_split and cfg.get("dev_fraction", 0) > 0:
            by_split.update(
                _seeded_split(by_split.pop("train"), {"dev": cfg["dev_fraction"]}, cfg["split_by"], cfg["seed"])
            )
            sources["dev"] = f"the held-out dev share of {sources['train']}"
    else:
        raise DataConfigError("data=file needs data.train (and optionally data.dev, data.test) or data.path")
    for kind in ("polarity", "target"):
        counts = tally.summary()[kind]
        log.info("%s labels as read %s; as mapped %s", kind, counts["as_read"], counts["mapped"])

    found = tuple(dict.fromkeys(t for rows in by_split.values() for r in rows for t in r["stances"]))
    targets = tuple(cfg["targets"]) if cfg.get("targets") else found
    unknown = sorted(set(found) - set(targets))
    if unknown:
        raise DataError(
            f"targets {unknown} are in the data but not in data.targets {list(targets)} "
            "(add them, or rename them with data.target_map or data.target_map_file)"
        )
    targets, coverage = _training_coverage(by_split, targets, explicit=bool(cfg.get("targets")))
    warnings += coverage
    try:
        labels = LabelSpace(targets, polarities)
    except ValueError as error:  # an empty target name, or '=' in one
        raise DataError(f"the data's targets cannot be used: {error}") from error
    for warning in warnings:
        log.warning(warning)
    splits = datasets.DatasetDict(
        {
            name: _to_dataset([{**r, "labels": labels.encode(r["stances"])} for r in rows], labels)
            for name, rows in by_split.items()
            if rows
        }
    )
    summary = {"sentences": {name: len(split) for name, split in splits.items()}, "labels": tally.summary()}
    return StanceData(labels, splits, _files_text(fmt, read), warnings, split_sources=sources, summary=summary)


def _files_text(fmt: str, files: list[str]) -> str:
    """`csv files [a, b]`, at most six names shown."""
    unique = sorted(set(files))
    shown = unique if len(unique) <= 6 else [*unique[:3], f"... {len(unique)} files"]
    return f"{fmt} files {shown}"


MIN_TARGET_ROWS = 3  # fewer annotated training rows than this: more likely a typo than a target


def _training_coverage(
    by_split: dict[str, list[dict]], targets: tuple[str, ...], explicit: bool
) -> tuple[tuple[str, ...], list[str]]:
    """The targets a model can learn from the training rows, and warnings about the others.

    A target annotated only in dev or test would be predicted uniformly and pull every
    overall figure down: it is left out (kept, with a warning, when data.targets names it).
    A target with very few training rows (a typo in a target column) and a polarity never
    seen in training are warned about.
    """
    if "train" not in by_split:  # evaluation data: nothing is trained on it
        return targets, []
    warnings, kept = [], []
    for target in targets:
        rows = [r for r in by_split["train"] if r["stances"].get(target) is not None]
        elsewhere = [r for name, rs in by_split.items() if name != "train" for r in rs if r["stances"].get(target)]
        labelled = rows or elsewhere
        first_row = labelled[0]["lines"].get(target, labelled[0]["where"]) if labelled else "no row"
        if not rows:
            if explicit:
                kept.append(target)
                warnings.append(f"target '{target}' has no annotated training row: the model predicts it uniformly")
            else:
                warnings.append(
                    f"target '{target}' is annotated only outside the training data ({len(elsewhere)} row(s), first "
                    f"at {first_row}): it is left out of the model and the metrics "
                    "(name it in data.targets to keep it)"
                )
            continue
        kept.append(target)
        if len(rows) < MIN_TARGET_ROWS:
            warnings.append(
                f"target '{target}' has only {len(rows)} annotated training row(s) (first at {first_row}): "
                "a typo in the target column? (data.targets restricts the targets)"
            )
        unseen = sorted({r["stances"][target] for r in elsewhere} - {r["stances"][target] for r in rows})
        if unseen:
            warnings.append(f"target '{target}': polarity {unseen} is in dev/test but never in the training data")
    if not kept:
        raise DataError(f"no target has an annotated training row (targets found: {list(targets)})")
    return tuple(kept), warnings
