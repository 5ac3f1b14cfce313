"""Annotation files: reading, and validating every rule at once.

An annotation directory holds `schema.yaml`, `splits.yaml`, `seeds.jsonl`, the
composed corpus under `corpus/*.jsonl` and real text annotated by people (imported from
Label Studio) under `annotated/`; the seed articles live in `../seeds/`.
Every problem is reported as `file:line: rule: message`, never only the first one.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from diplostance.errors import BadDataError, UserError
from diplostance.schema import LabelSpace
from diplostance.text import sentence_problem

SOURCES = ("seed", "composed", "annotated")  # annotated: real text labelled by people
SPLITS = ("train", "dev", "test")
REQUIRED_FIELDS = {
    "id": str,
    "doc_id": str,
    "sent_idx": int,
    "text": str,
    "stances": dict,
    "source": str,
    "annotator": str,
}


@dataclass(frozen=True)
class Problem:
    path: Path
    line: int
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}: {self.message}"


@dataclass
class Record:
    """One annotated sentence and where it was read from."""

    data: dict
    path: Path
    line: int


class AnnotationError(BadDataError, ValueError):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(f"{len(problems)} annotation problem(s):\n" + "\n".join(map(str, problems)))


@dataclass
class Corpus:
    labels: LabelSpace
    records: list[Record]
    splits: dict[str, str]  # doc_id -> split
    problems: list[Problem] = field(default_factory=list)


def annotation_files(directory: Path) -> list[Path]:
    """Top-level *.jsonl, the composed corpus and real text annotated by people (`annotated/`, from Label Studio);
    `*.review.jsonl` (tasks left for adjudication) are not annotation files."""
    found = [*sorted(directory.glob("*.jsonl")), *sorted((directory / "corpus").glob("**/*.jsonl"))]
    found += sorted((directory / "annotated").glob("**/*.jsonl"))
    return [path for path in found if not path.name.endswith(".review.jsonl")]


def read_jsonl(path: Path, problems: list[Problem]) -> list[Record]:
    records = []
    with path.open("rb") as raw_lines:  # bytes: a line that is not UTF-8 is one problem, the rest still read
        for number, raw in enumerate(raw_lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                message = f"byte {raw[error.start]:#04x} at column {error.start} is not UTF-8"
                problems.append(Problem(path, number, "not-utf8", message))
                continue
            if not line.strip():
                problems.append(Problem(path, number, "blank-line", "blank line in a JSON Lines file"))
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as error:
                problems.append(Problem(path, number, "invalid-json", str(error)))
                continue
            if not isinstance(data, dict):
                problems.append(
                    Problem(path, number, "not-an-object", f"expected a JSON object, got {type(data).__name__}")
                )
                continue
            records.append(Record(data, path, number))
    return records


def read_registers(schema_path: Path) -> tuple[str, ...]:
    """The registers (kinds of outlet) a news-register record may name, from schema.yaml."""
    try:
        data = yaml.safe_load(schema_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return ()  # LabelSpace.load reports an unreadable schema
    return tuple(data.get("registers") or ()) if isinstance(data, dict) else ()


def _check_fields(record: Record, labels: LabelSpace, problems: list[Problem], registers: tuple[str, ...] = ()) -> bool:
    """Field presence, types and values; False when the record is unusable."""
    data, ok = record.data, True

    def report(rule: str, message: str) -> None:
        problems.append(Problem(record.path, record.line, rule, message))

    for name, kind in REQUIRED_FIELDS.items():
        if name not in data:
            report("missing-field", f"'{name}' is required")
            ok = False
        elif not isinstance(data[name], kind) or (kind is int and isinstance(data[name], bool)):
            report("field-type", f"'{name}' must be {kind.__name__}, got {type(data[name]).__name__}")
            ok = False
    if not ok:
        return False
    if not data["text"].strip():
        report("empty-text", "text is empty or whitespace only")
    elif problem := sentence_problem(data["text"]):
        report("bad-text", problem)
    if data["sent_idx"] < 0:
        report("field-type", f"'sent_idx' must be >= 0, got {data['sent_idx']}")
    if data["source"] not in SOURCES:
        report("unknown-source", f"source '{data['source']}' is not one of {list(SOURCES)}")
    if data["source"] == "composed" and not str(data.get("rationale", "")).strip():
        report("missing-field", "composed records need a one-line 'rationale'")
    if "register" in data and data["register"] not in registers:
        report("unknown-register", f"register {data['register']!r} is not one of {list(registers)} (schema.yaml)")
    for target, polarity in data["stances"].items():
        if target not in labels.targets:
            report("unknown-target", f"target '{target}' is not in the schema {list(labels.targets)}")
        elif polarity not in labels.polarities:
            report("unknown-polarity", f"{target}: polarity {polarity!r} is not one of {list(labels.polarities)}")
    if not data["stances"]:
        report("empty-stances", "stances names no target")
    return True


def _check_holders(directory: Path, records: list[Record], labels: LabelSpace, problems: list[Problem]) -> None:
    """The actor inventory (actors.yaml, when the folder has one) and the records' optional `holders`."""
    from diplostance.actors import ACTORS_FILE, check_holders, check_inventory

    path, inventory = directory / ACTORS_FILE, None
    if path.is_file():
        inventory, found = check_inventory(path)
        problems.extend(Problem(path, line, rule, message) for line, rule, message in found)
    for record in records:
        if "holders" in record.data:
            found = check_holders(record.data["holders"], record.data["stances"], labels.targets, inventory)
            problems.extend(Problem(record.path, record.line, rule, message) for rule, message in found)


def _has_int_offsets(data: dict) -> bool:
    return all(isinstance(data.get(k), int) and not isinstance(data.get(k), bool) for k in ("start", "end"))


def _check_seed_offsets(record: Record, seeds_dir: Path, seed_texts: dict, problems: list[Problem]) -> None:
    data = record.data
    doc_id = data["doc_id"]
    if doc_id not in seed_texts:
        path = seeds_dir / f"{doc_id}.txt"
        try:
            seed_texts[doc_id] = path.read_text(encoding="utf-8") if path.is_file() else None
        except UnicodeDecodeError as error:
            problems.append(Problem(path, 0, "not-utf8", f"the seed article is not UTF-8 ({error.reason})"))
            seed_texts[doc_id] = None
            return
    seed = seed_texts[doc_id]
    if seed is None:
        problems.append(
            Problem(record.path, record.line, "seed-file", f"no seed article {seeds_dir / (doc_id + '.txt')}")
        )
        return
    start, end = data.get("start"), data.get("end")
    if not _has_int_offsets(data):
        problems.append(
            Problem(record.path, record.line, "seed-offsets", "seed records need integer 'start' and 'end'")
        )
    elif not 0 <= start < end <= len(seed) or seed[start:end] != data["text"]:
        problems.append(
            Problem(record.path, record.line, "seed-offsets", f"text does not equal {doc_id}.txt[{start}:{end}]")
        )


def _check_seed_coverage(records: list[Record], seed_texts: dict, problems: list[Problem]) -> None:
    """The spans of a seed article's records cover all of its non-whitespace characters."""
    by_doc = defaultdict(list)
    for record in records:
        if record.data.get("source") == "seed":
            by_doc[record.data["doc_id"]].append(record)
    for doc_id, doc_records in by_doc.items():
        text = seed_texts.get(doc_id)
        if text is None or not all(_has_int_offsets(r.data) for r in doc_records):
            continue  # already reported as seed-file / seed-offsets
        covered = [False] * len(text)
        for record in doc_records:
            for i in range(max(record.data["start"], 0), min(record.data["end"], len(text))):
                if covered[i]:
                    problems.append(Problem(record.path, record.line, "seed-coverage", f"span overlaps another at {i}"))
                    break
                covered[i] = True
        missing = [i for i, char in enumerate(text) if not char.isspace() and not covered[i]]
        if missing:
            first = doc_records[0]
            problems.append(
                Problem(
                    first.path,
                    first.line,
                    "seed-coverage",
                    f"{doc_id}: {len(missing)} non-whitespace characters in no span (first at offset {missing[0]})",
                )
            )


def _check_documents(records: list[Record], problems: list[Problem]) -> None:
    seen_ids: dict[str, Record] = {}
    by_doc: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        first = seen_ids.setdefault(record.data["id"], record)
        if first is not record:
            problems.append(
                Problem(
                    record.path,
                    record.line,
                    "duplicate-id",
                    f"id '{record.data['id']}' already at {first.path}:{first.line}",
                )
            )
        by_doc[record.data["doc_id"]].append(record)
    for doc_id, doc_records in by_doc.items():
        # Annotated real text is a selection of an article's sentences, sent over several rounds:
        # its sent_idx may have gaps and its records may be in several files; repeats are still errors.
        sampled = all(r.data["source"] == "annotated" for r in doc_records)
        files = {r.path for r in doc_records}
        if len(files) > 1 and not sampled:
            problems.append(
                Problem(
                    doc_records[0].path,
                    doc_records[0].line,
                    "doc-in-two-files",
                    f"document '{doc_id}' has records in {sorted(map(str, files))}",
                )
            )
        expected = 0
        for record in sorted(doc_records, key=lambda r: (r.data["sent_idx"], r.line)):
            idx = record.data["sent_idx"]
            if idx < expected:
                problems.append(Problem(record.path, record.line, "sent-idx", f"{doc_id}: sent_idx {idx} repeated"))
            elif idx > expected and not sampled:
                problems.append(
                    Problem(
                        record.path,
                        record.line,
                        "sent-idx",
                        f"{doc_id}: sent_idx jumps to {idx}, expected {expected} (gap)",
                    )
                )
            expected = max(expected, idx + 1)


def read_splits(path: Path, problems: list[Problem]) -> dict[str, tuple[str, int]]:
    """splits.yaml: {train: [doc_id, ...], dev: [...], test: [...]} -> doc_id -> (split, line)."""
    if not path.is_file():
        problems.append(Problem(path, 0, "splits-file", "splits.yaml is missing"))
        return {}
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as error:
        problems.append(Problem(path, 0, "not-utf8", f"byte {error.object[error.start]:#04x} at offset {error.start}"))
        return {}
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", -1) + 1
        problems.append(Problem(path, line, "invalid-yaml", str(error).splitlines()[0]))
        return {}
    if not isinstance(root, yaml.MappingNode):
        problems.append(Problem(path, 1, "splits-file", f"expected a mapping of {list(SPLITS)} to document lists"))
        return {}
    doc_split: dict[str, tuple[str, int]] = {}
    for key_node, value_node in root.value:
        split = key_node.value
        if split not in SPLITS:
            problems.append(
                Problem(path, key_node.start_mark.line + 1, "unknown-split", f"'{split}' is not one of {list(SPLITS)}")
            )
            continue
        if not isinstance(value_node, yaml.SequenceNode):
            problems.append(
                Problem(path, value_node.start_mark.line + 1, "splits-file", f"'{split}' must list document ids")
            )
            continue
        for item in value_node.value:
            doc_id = str(item.value)
            if doc_id in doc_split:
                problems.append(
                    Problem(
                        path,
                        item.start_mark.line + 1,
                        "doc-in-two-splits",
                        f"'{doc_id}' is in both {doc_split[doc_id][0]} and {split}",
                    )
                )
            else:
                doc_split[doc_id] = (split, item.start_mark.line + 1)
    return doc_split


def _check_splits(
    records: list[Record], splits: dict[str, tuple[str, int]], splits_path: Path, problems: list[Problem]
) -> None:
    docs_seen, text_split = set(), {}
    for record in records:
        doc_id = record.data["doc_id"]
        split = splits[doc_id][0] if doc_id in splits else None
        if split is None:
            if doc_id not in docs_seen:
                problems.append(
                    Problem(
                        record.path,
                        record.line,
                        "doc-not-in-splits",
                        f"document '{doc_id}' is not in {splits_path.name}",
                    )
                )
        else:
            text = " ".join(record.data["text"].split())
            other = text_split.setdefault(text, (split, record))
            if other[0] != split:
                problems.append(
                    Problem(
                        record.path,
                        record.line,
                        "text-in-two-splits",
                        f"text also in split '{other[0]}' at {other[1].path}:{other[1].line}",
                    )
                )
        docs_seen.add(doc_id)
    for doc_id in sorted(set(splits) - docs_seen):
        problems.append(
            Problem(splits_path, splits[doc_id][1], "unknown-doc-in-splits", f"'{doc_id}' has no annotation records")
        )


def load_schema(directory: Path) -> LabelSpace:
    """The annotation folder's schema.yaml; a missing folder or schema, or an unusable one, is a user error."""
    path = directory / "schema.yaml"
    if not directory.is_dir():
        raise UserError(f"{directory}: no such annotation folder (it holds schema.yaml, splits.yaml and *.jsonl)")
    if not path.is_file():
        raise UserError(f"{path}: schema file missing; every annotation folder needs one (targets, polarities)")
    try:
        return LabelSpace.load(path)
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", -1) + 1
        raise AnnotationError([Problem(path, line, "invalid-yaml", str(error).splitlines()[0])]) from error
    except UnicodeDecodeError as error:
        raise AnnotationError([Problem(path, 0, "not-utf8", f"byte at offset {error.start}")]) from error
    except (ValueError, TypeError, AttributeError) as error:  # a schema of the wrong shape
        raise AnnotationError([Problem(path, 1, "schema-file", f"not a usable schema: {error}")]) from error


def load_corpus(directory: str | Path, seeds_dir: str | Path | None = None) -> Corpus:
    """Read and check an annotation directory; `problems` lists everything wrong."""
    directory = Path(directory)
    seeds_dir = Path(seeds_dir) if seeds_dir else directory.parent / "seeds"
    problems: list[Problem] = []
    labels = load_schema(directory)
    records: list[Record] = []
    files = annotation_files(directory)
    if not files:
        problems.append(Problem(directory, 0, "no-annotations", "no *.jsonl annotation files found"))
    for path in files:
        records.extend(read_jsonl(path, problems))
    registers = read_registers(directory / "schema.yaml")
    usable = [r for r in records if _check_fields(r, labels, problems, registers)]
    _check_holders(directory, usable, labels, problems)  # actors.yaml, and each record's `holders`
    seed_texts: dict[str, str | None] = {}
    for record in usable:
        if record.data["source"] == "seed":
            _check_seed_offsets(record, seeds_dir, seed_texts, problems)
    _check_seed_coverage(usable, seed_texts, problems)
    _check_documents(usable, problems)
    splits_path = directory / "splits.yaml"
    split_entries = read_splits(splits_path, problems)
    _check_splits(usable, split_entries, splits_path, problems)
    problems.sort(key=lambda p: (str(p.path), p.line))
    return Corpus(labels, usable, {doc_id: split for doc_id, (split, _) in split_entries.items()}, problems)


def record_slice(record: dict) -> str:
    """The report slice of a record: its source, except that composed news-register articles
    (records with a `register`) are `news`, shown apart from the v1 composed corpus."""
    if record["source"] == "composed" and record.get("register"):
        return "news"
    return record["source"]


def count_table(corpus: Corpus) -> str:
    """Markdown table of sentence counts per slice and split, per target and polarity."""
    counts: Counter = Counter()
    groups = sorted({(record_slice(r.data), corpus.splits.get(r.data["doc_id"], "?")) for r in corpus.records})
    for r in corpus.records:
        key = (record_slice(r.data), corpus.splits.get(r.data["doc_id"], "?"))
        counts[key, "sentences"] += 1
        counts[key, "documents", r.data["doc_id"]] = 1
        for target, polarity in r.data["stances"].items():
            counts[key, target, polarity] += 1
        if sum(p != "none" for p in r.data["stances"].values()) >= 2:
            counts[key, "multi"] += 1
        if all(p == "none" for p in r.data["stances"].values()):
            counts[key, "all_none"] += 1
    labels = corpus.labels
    columns = [f"{t} {'/'.join(p[0] for p in labels.polarities)}" for t in labels.targets]
    header = ["slice", "split", "docs", "sentences", *columns, "all none", "2+ stances"]
    rows = []
    for key in [*groups, ("all", "all")]:
        keys = groups if key == ("all", "all") else [key]

        def total(*name, keys=keys):
            return sum(counts[(k, *name)] for k in keys)

        docs = sum(v for (k, *rest), v in counts.items() if k in keys and rest[0] == "documents")
        cells = ["/".join(str(total(t, p)) for p in labels.polarities) for t in labels.targets]
        rows.append([*key, str(docs), str(total("sentences")), *cells, str(total("all_none")), str(total("multi"))])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
