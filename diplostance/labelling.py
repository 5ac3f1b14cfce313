"""Batch labelling: every sentence of new articles gets each target's stance, plus a per-article profile.

The run streams. Articles are read lazily from `.txt` files, `.jsonl` files, folders
and glob patterns; whole articles are gathered into windows of about
`window_sentences` sentences; each window is predicted (the predictor sorts by length
and pads each batch to its own longest sentence), written in document order, and
checkpointed. Memory therefore depends on the window, never on the input size.

Work in progress lives in `OUT.partial/` (the three output streams plus `state.json`,
which records the checkpoint: the next unread input item and the byte size of every
stream). A rerun of the same command truncates anything written after the checkpoint
and carries on from it. Only a complete run is moved to its final names
(`OUT.jsonl`, `OUT.docs.jsonl`, `OUT.errors.jsonl`), so a partial output is never
mistaken for a finished one, and a finished one is never replaced unless
`overwrite=true`.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import dataclasses
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from diplostance.errors import UserError
from diplostance.predictor import PRECISIONS, ModelFolderError, check_model_folder, load_predictor
from diplostance.schema import LabelSpace
from diplostance.scoring import NEUTRAL_POLARITY
from diplostance.text import Sentence, split_sentences

log = logging.getLogger(__name__)

INPUT_KINDS = {".txt": "txt", ".jsonl": "jsonl"}
FORMAT_SUFFIXES = {"jsonl": ".jsonl", "csv": ".csv", "parquet": ".parquet"}
GLOB_CHARS = frozenset("*?[")
SNIFF_BYTES = 8192  # a NUL byte in the first 8 KiB means binary, as git decides
PROB_DECIMALS = 6
LOGGED_ERRORS = 20
CONVERT_CHUNK = 10_000  # records per chunk when converting the finished stream to csv/parquet
STATE_FILE = "state.json"
STREAMS = {"records": "records.jsonl", "docs": "docs.jsonl", "errors": "errors.jsonl"}
USAGE = "python scripts/label.py model_dir=RUN/model inputs=[articles/,more.jsonl] output=OUT.jsonl"


class LabellingError(UserError, ValueError):
    """A problem with the run's options or output location, reported before any labelling."""


class OutputExistsError(LabellingError):
    """The finished output is already there and `overwrite` is off."""


# ---------------------------------------------------------------------------- options


@dataclass(frozen=True)
class OutputPaths:
    records: Path  # OUT.jsonl, or OUT.csv / OUT.parquet
    docs: Path  # OUT.docs.jsonl
    errors: Path  # OUT.errors.jsonl
    work: Path  # OUT.partial/: the run in progress
    format: str

    @property
    def finals(self) -> tuple[Path, Path, Path]:
        return self.records, self.docs, self.errors


def output_paths(path: str | Path, fmt: str | None = None) -> OutputPaths:
    """Where a run writes. `fmt` None takes the format from the suffix (default jsonl);
    an explicit format replaces the suffix (OUT.jsonl + csv -> OUT.csv)."""
    path = Path(path)
    if path.is_dir() or str(path).endswith(os.sep):
        raise LabellingError(f"output={path} is a folder; give a file path such as OUT.jsonl")
    by_suffix = {suffix: name for name, suffix in FORMAT_SUFFIXES.items()}
    suffix = path.suffix.lower()
    fmt = fmt or by_suffix.get(suffix, "jsonl")
    if fmt not in FORMAT_SUFFIXES:
        raise LabellingError(f"output.format must be one of {list(FORMAT_SUFFIXES)}, got {fmt!r}")
    stem = path.with_suffix("") if suffix in by_suffix else path
    records, docs, errors, work = (
        stem.with_name(stem.name + tail) for tail in (FORMAT_SUFFIXES[fmt], ".docs.jsonl", ".errors.jsonl", ".partial")
    )
    return OutputPaths(records, docs, errors, work, fmt)


@dataclass(frozen=True)
class LabelOptions:
    model_dir: Path
    inputs: tuple[str, ...]
    output: OutputPaths
    jsonl_id_field: str = "id"
    jsonl_text_field: str = "text"
    window_sentences: int = 512
    precision: str = "fp32"
    batch_size: int = 64
    max_length: int = 128
    num_threads: int | None = None
    allow_errors: bool = False
    overwrite: bool = False
    resume: bool = True
    progress_bar: bool = True

    @classmethod
    def from_config(cls, cfg: Mapping | DictConfig) -> LabelOptions:
        """Options from the composed `configs/label.yaml` (or a plain dict of the same shape)."""
        if isinstance(cfg, DictConfig):
            missing = sorted(k for k in OmegaConf.missing_keys(cfg) if not k.startswith("hydra"))
            if missing:
                raise LabellingError(f"missing required option(s) {missing}; e.g. {USAGE}")
            cfg = OmegaConf.to_container(cfg, resolve=True)
        cfg = {k: v for k, v in cfg.items() if k != "hydra"}
        for key in ("model_dir", "inputs", "output"):
            if cfg.get(key) in (None, "", "???"):
                raise LabellingError(f"{key} is required; e.g. {USAGE}")
        output = cfg.pop("output")
        if isinstance(output, Mapping):  # `output.path` / `output.format`
            if output.get("path") in (None, "", "???"):
                raise LabellingError(f"output.path is required; e.g. {USAGE}")
            paths = output_paths(output["path"], output.get("format"))
        else:  # a plain `output: OUT.jsonl`
            paths = output_paths(output, cfg.pop("format", None))
        inputs = cfg.pop("inputs")
        inputs = (inputs,) if isinstance(inputs, str | Path) else tuple(str(i) for i in inputs)
        known = {f.name for f in dataclasses.fields(cls)} - {"inputs", "output"}
        unknown = sorted(set(cfg) - known)
        if unknown:
            raise LabellingError(f"unknown option(s) {unknown}; known: {sorted(known)}")
        options = cls(Path(cfg.pop("model_dir")), inputs, paths, **cfg)
        options.check()
        return options

    def check(self) -> None:
        if not self.inputs:
            raise LabellingError("inputs is empty: give files, folders or glob patterns, e.g. inputs=[articles/]")
        if self.precision not in PRECISIONS:
            raise LabellingError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        for key in ("window_sentences", "batch_size", "max_length"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise LabellingError(f"{key} must be a positive integer, got {getattr(self, key)!r}")
        if self.jsonl_id_field == self.jsonl_text_field:
            raise LabellingError("jsonl_id_field and jsonl_text_field must differ")


def expand_output_shorthand(argv: Sequence[str]) -> list[str]:
    """Rewrite the override `output=OUT.jsonl` as `output.path=OUT.jsonl`.

    `output` is a mapping (path, format), and Hydra would replace the whole mapping with
    the string, so `output=OUT.jsonl output.format=csv` could not work as written.
    """
    rewritten = []
    for arg in argv:
        if arg.startswith("output=") and not arg[len("output=") :].lstrip().startswith(("{", "null")):
            arg = "output.path=" + arg[len("output=") :]
        rewritten.append(arg)
    return rewritten


# ---------------------------------------------------------------------------- model folder


# ---------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Source:
    """One input file found from `inputs`; kind 'error' stands for an input that names nothing usable."""

    path: str
    kind: str  # txt | jsonl | error
    problem: str = ""


@dataclass(frozen=True)
class Article:
    doc_id: str
    text: str
    source: str  # the file, or file:line for JSON Lines


@dataclass(frozen=True)
class InputError:
    file: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        return f"{self.file}{'' if self.line is None else f':{self.line}'}: {self.reason}"


Item = Article | InputError


def discover_inputs(inputs: Iterable[str], exclude: Iterable[Path] = ()) -> list[Source]:
    """Files named by `inputs` in a stable order: files as given, folders recursively (sorted,
    hidden entries skipped), glob patterns sorted. Each file appears once; `exclude` (the
    run's own outputs) never does. Names that match nothing become 'error' sources."""
    excluded = [Path(p).resolve() for p in exclude]
    sources: list[Source] = []
    seen: set[Path] = set()

    def add_file(path: Path) -> None:
        resolved = path.resolve()
        if resolved in seen or any(resolved == e or e in resolved.parents for e in excluded):
            return
        seen.add(resolved)
        kind = INPUT_KINDS.get(path.suffix.lower())
        if kind:
            sources.append(Source(str(path), kind))
        else:
            problem = f"unsupported file type {path.suffix or '(no suffix)'!r}: inputs are .txt or .jsonl files"
            sources.append(Source(str(path), "error", problem))

    def add(path: Path) -> None:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                if child.is_file() and not any(part.startswith(".") for part in child.relative_to(path).parts):
                    add_file(child)
        else:
            add_file(path)

    for item in inputs:
        item = os.path.expanduser(str(item))
        if GLOB_CHARS.intersection(item) and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                sources.append(Source(item, "error", "the pattern matches no files"))
            for match in matches:
                add(Path(match))
        elif Path(item).exists():
            add(Path(item))
        else:
            sources.append(Source(item, "error", "no such file or folder"))
    return sources


def _decode_error(data: bytes, error: UnicodeDecodeError, where: str) -> str:
    return f"not UTF-8 text: byte 0x{data[error.start]:02x} at {where} ({error.reason})"


def _read_txt(path: str) -> Item:
    try:
        with open(path, "rb") as handle:
            head = handle.read(SNIFF_BYTES)
            if b"\0" in head:  # before reading the rest: a large binary file is never loaded
                return InputError(path, None, "binary file (NUL bytes), not text")
            data = head + handle.read()
    except OSError as error:
        return InputError(path, None, f"cannot be read: {error.strerror or error}")
    if not data:
        return InputError(path, None, "empty file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        return InputError(path, line, _decode_error(data, error, f"byte offset {error.start}"))
    if not text.strip():
        return InputError(path, None, "no text (only whitespace)")
    return Article(Path(path).stem, text, path)


def _parse_jsonl_line(path: str, lineno: int, raw: bytes, id_field: str, text_field: str) -> Item:
    def bad(reason: str) -> InputError:
        return InputError(path, lineno, reason)

    try:
        record = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        return bad(_decode_error(raw, error, f"byte {error.start + 1} of the line"))
    except json.JSONDecodeError as error:
        return bad(f"not JSON: {error.msg.removesuffix(' at')} at column {error.colno}")
    if not isinstance(record, dict):
        return bad(f"not a JSON object (a {type(record).__name__})")
    if text_field not in record:
        return bad(f"no {text_field!r} field (jsonl_text_field)")
    text, doc_id = record[text_field], record.get(id_field)
    if not isinstance(text, str):
        return bad(f"{text_field!r} is not a string")
    if not text.strip():
        return bad(f"{text_field!r} is empty")
    if id_field not in record:
        return bad(f"no {id_field!r} field (jsonl_id_field)")
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int) or not str(doc_id).strip():
        return bad(f"{id_field!r} must be a non-empty string or an integer, got {doc_id!r}")
    try:  # JSON escapes can spell unpaired surrogates, which no UTF-8 output can hold
        text.encode("utf-8"), str(doc_id).encode("utf-8")
    except UnicodeEncodeError:
        return bad("the text or id contains an unpaired surrogate escape (\\udXXX)")
    return Article(str(doc_id), text, f"{path}:{lineno}")


def _read_jsonl(path: str, id_field: str, text_field: str, skip: int) -> Iterator[tuple[int, Item]]:
    """One item per non-blank line; the first `skip` lines are counted, not parsed."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below; the open itself may fail
    except OSError as error:
        if skip == 0:
            yield 0, InputError(path, None, f"cannot be read: {error.strerror or error}")
        return
    with handle:
        head = handle.read(SNIFF_BYTES)
        problem = "empty file" if not head else "binary file (NUL bytes), not text" if b"\0" in head else None
        if problem:
            if skip == 0:
                yield 0, InputError(path, None, problem)
            return
        handle.seek(0)
        index = 0
        for lineno, raw in enumerate(handle, 1):
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if not raw.strip():
                continue
            if index >= skip:
                yield index, _parse_jsonl_line(path, lineno, raw, id_field, text_field)
            index += 1
        if index == 0 and skip == 0:
            yield 0, InputError(path, None, "no articles (only blank lines)")


def read_source(source: Source, id_field: str = "id", text_field: str = "text", skip: int = 0):
    """(index within the source, Article or InputError), from index `skip` on."""
    if source.kind == "jsonl":
        yield from _read_jsonl(source.path, id_field, text_field, skip)
    elif skip == 0:
        yield 0, _read_txt(source.path) if source.kind == "txt" else InputError(source.path, None, source.problem)


def iter_items(
    sources: Sequence[Source], id_field: str = "id", text_field: str = "text", start: Sequence[int] = (0, 0)
) -> Iterator[tuple[tuple[int, int], Item]]:
    """Every article or input error, keyed by (source index, item index), from `start` on."""
    first_source, first_item = start
    for s in range(first_source, len(sources)):
        skip = first_item if s == first_source else 0
        for k, item in read_source(sources[s], id_field, text_field, skip):
            yield (s, k), item


# ---------------------------------------------------------------------------- records


def sentence_records(article: Article, sentences: Sequence[Sentence], probs: np.ndarray, labels: LabelSpace):
    """One output record per sentence: offsets into the article text, stance and probabilities per target."""
    stances = probs.argmax(-1)
    for i, (sentence, p, st) in enumerate(zip(sentences, probs.tolist(), stances.tolist(), strict=True)):
        yield {
            "doc_id": article.doc_id,
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


def flat_columns(labels: LabelSpace) -> list[str]:
    """csv/parquet columns: the record's fields with `stances`/`probs` spelled stance.T and prob.T.P."""
    return [
        "doc_id",
        "sent_idx",
        "start",
        "end",
        "text",
        *(f"stance.{t}" for t in labels.targets),
        *(f"prob.{t}.{p}" for t in labels.targets for p in labels.polarities),
    ]


def flatten(record: dict, labels: LabelSpace) -> list:
    return [
        *(record[k] for k in ("doc_id", "sent_idx", "start", "end", "text")),
        *(record["stances"][t] for t in labels.targets),
        *(record["probs"][t][p] for t in labels.targets for p in labels.polarities),
    ]


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
    columns = flat_columns(labels)
    if fmt == "csv":
        with open(target, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for chunk in _chunks(jsonl):
                writer.writerows(flatten(r, labels) for r in chunk)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    n_text = 5 + len(labels.targets)
    types = [pa.string(), pa.int32(), pa.int64(), pa.int64(), pa.string()] + [pa.string()] * len(labels.targets)
    schema = pa.schema([(c, t) for c, t in zip(columns, types + [pa.float32()] * (len(columns) - n_text), strict=True)])
    with pq.ParquetWriter(target, schema) as writer:  # with no rows it still writes the schema
        for chunk in _chunks(jsonl):
            columns = zip(*(flatten(r, labels) for r in chunk), strict=True)
            arrays = [pa.array(values, f.type) for values, f in zip(columns, schema, strict=True)]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema))


# ---------------------------------------------------------------------------- run state


@dataclass
class Counts:
    articles: int = 0
    sentences: int = 0
    failed: int = 0  # input files or lines that could not be labelled


@dataclass
class RunState:
    """What `OUT.partial/state.json` records at each checkpoint."""

    fingerprint: dict
    labels: dict  # targets and polarities, for converting to csv/parquet without the model
    next_item: list[int] = field(default_factory=lambda: [0, 0])  # (source, item) of the first unwritten item
    sizes: dict = field(default_factory=lambda: dict.fromkeys(STREAMS, 0))  # bytes of each stream
    counts: Counts = field(default_factory=Counts)
    phase: str = "labelling"  # labelling | finishing

    def save(self, work: Path) -> None:
        tmp = work / (STATE_FILE + ".tmp")
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(asdict(self), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, work / STATE_FILE)  # atomic: a reader sees the old checkpoint or the new one

    @classmethod
    def load(cls, work: Path) -> RunState | None:
        try:
            data = json.loads((work / STATE_FILE).read_text(encoding="utf-8"))
            return cls(**{**data, "counts": Counts(**data["counts"])})
        except (OSError, ValueError, TypeError, KeyError):
            return None


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def _file_facts(path: Path) -> list:
    try:
        stat = path.stat()
        return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    except OSError:
        return [str(path), None, None]


def run_fingerprint(options: LabelOptions, kind: str, sources: Sequence[Source]) -> dict:
    """The settings a resumed run must share with the interrupted one (not the format, threads or
    window: they do not change the records)."""
    model_files = sorted(p for p in options.model_dir.iterdir() if p.is_file())
    return {
        "model": _digest([_file_facts(p) for p in model_files]),
        "precision": options.precision if kind == "transformer" else None,
        "max_length": options.max_length if kind == "transformer" else None,
        "jsonl_fields": [options.jsonl_id_field, options.jsonl_text_field],
        "inputs": _digest([[s.kind, s.problem, *_file_facts(Path(s.path))] for s in sources]),
    }


class PartialStreams:
    """The three JSONL streams in OUT.partial/, opened for appending at the checkpoint."""

    def __init__(self, work: Path, state: RunState):
        self.work, self.state, self.handles = work, state, {}
        for key, name in STREAMS.items():
            path, size = work / name, state.sizes[key]
            actual = path.stat().st_size if path.exists() else 0
            if actual < size:
                raise LabellingError(
                    f"{path} is shorter ({actual} bytes) than its checkpoint ({size} bytes): the partial output "
                    "was changed by hand; pass overwrite=true to start again"
                )
            with open(path, "ab") as handle:
                handle.truncate(size)  # drop whatever was written after the last checkpoint
            self.handles[key] = open(path, "ab")  # noqa: SIM115 - closed in close()

    def write(self, key: str, record: dict) -> None:
        self.handles[key].write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")

    def checkpoint(self) -> None:
        for key, handle in self.handles.items():
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the state that points past it
            self.state.sizes[key] = handle.tell()
        self.state.save(self.work)

    def close(self) -> None:
        for handle in self.handles.values():
            handle.close()


@contextlib.contextmanager
def _locked(work: Path):
    """One run per output: a second concurrent run would interleave its writes."""
    created = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    lock = open(work / "lock", "w")  # noqa: SIM115 - closed below
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise LabellingError(f"another labelling run is writing {work}") from None
    try:
        yield created
    finally:
        lock.close()


def _start_or_resume(options: LabelOptions, fingerprint: dict, labels: LabelSpace, created: bool) -> RunState:
    """The state to continue from, after applying the rules on existing output (see module docstring)."""
    paths = options.output
    state = None if created else RunState.load(paths.work)
    finals = [str(p) for p in paths.finals if p.exists()]
    if state and options.resume and state.fingerprint == fingerprint:
        if finals and state.phase != "finishing" and not options.overwrite:
            raise OutputExistsError(f"{', '.join(finals)} already exist(s); pass overwrite=true to replace")
        counts = state.counts
        log.info(
            "resuming %s: %d articles, %d sentences already labelled", paths.work, counts.articles, counts.sentences
        )
        if state.phase != "finishing":
            _remove(p for p in paths.finals if p.exists())
        return state
    if state and options.resume and not options.overwrite:
        changed = sorted(k for k in fingerprint if state.fingerprint.get(k) != fingerprint[k])
        raise LabellingError(
            f"{paths.work} holds an interrupted run with other settings (changed: {', '.join(changed)}); rerun "
            "that command to finish it, or pass overwrite=true (or resume=false) to discard it"
        )
    if finals and not options.overwrite:
        raise OutputExistsError(
            f"{', '.join(finals)} already exist(s) (a finished run); pass overwrite=true to replace"
        )
    _remove(p for p in paths.finals if p.exists())
    for name in (*STREAMS.values(), STATE_FILE):
        (paths.work / name).unlink(missing_ok=True)
    state = RunState(fingerprint, {"targets": list(labels.targets), "polarities": list(labels.polarities)})
    state.save(paths.work)
    return state


def _remove(paths: Iterable[Path]) -> None:
    for path in paths:
        path.unlink()


def _finish(paths: OutputPaths, state: RunState) -> None:
    """Move the finished streams to their final names. Every step can be repeated, so a run killed
    here finishes on the next invocation; the work folder goes last."""
    state.phase = "finishing"
    state.save(paths.work)
    labels = LabelSpace(tuple(state.labels["targets"]), tuple(state.labels["polarities"]))
    records = paths.work / STREAMS["records"]
    if records.exists():
        if paths.format == "jsonl":
            os.replace(records, paths.records)
        else:
            tmp = paths.work / ("records" + FORMAT_SUFFIXES[paths.format])
            convert_records(records, tmp, paths.format, labels)
            os.replace(tmp, paths.records)
            records.unlink()
    for key, final in (("docs", paths.docs), ("errors", paths.errors)):
        if (paths.work / STREAMS[key]).exists():
            os.replace(paths.work / STREAMS[key], final)
    shutil.rmtree(paths.work)


# ---------------------------------------------------------------------------- the run


@dataclass
class LabelSummary:
    paths: OutputPaths
    counts: Counts
    sources: int
    seconds: float
    resumed: bool

    @property
    def failed(self) -> bool:
        return self.counts.failed > 0

    def lines(self) -> list[str]:
        """What the command prints last: where the outputs are, then the counts."""
        errors = f", listed in {self.paths.errors}" if self.counts.failed else ""
        return [
            f"outputs: {self.paths.records}, {self.paths.docs}, {self.paths.errors}",
            f"labelled {self.counts.articles} articles ({self.counts.sentences} sentences) from {self.sources} "
            f"input files in {self.seconds:.1f} s{' (resumed)' if self.resumed else ''}",
            f"failed: {self.counts.failed} input(s) (files or lines){errors}",
        ]


def _predict_window(predictor, window: list[tuple[Article, list[Sentence]]], streams: PartialStreams, labels):
    if not window:  # a stretch of input errors only
        return
    texts = [s.text for _, sentences in window for s in sentences]
    unique = list(dict.fromkeys(texts))  # repeated boilerplate (datelines, bylines) is predicted once
    row_of = {text: i for i, text in enumerate(unique)}
    probs = predictor.predict_proba(unique)[[row_of[t] for t in texts]]
    row = 0
    for article, sentences in window:
        article_probs = probs[row : row + len(sentences)]
        for record in sentence_records(article, sentences, article_probs, labels):
            streams.write("records", record)
        streams.write("docs", doc_summary(article, article_probs, labels))
        row += len(sentences)


def _label_items(items, predictor, labels, streams: PartialStreams, window_sentences: int, bar) -> None:
    state = streams.state
    window: list[tuple[Article, list[Sentence]]] = []
    pending = 0  # sentences in the window
    dirty = False  # items consumed since the last checkpoint
    started, done = time.perf_counter(), 0

    def flush() -> None:
        nonlocal window, pending, done
        _predict_window(predictor, window, streams, labels)
        state.counts.articles += len(window)
        state.counts.sentences += pending
        streams.checkpoint()
        done += pending
        bar.update(len(window))
        bar.set_postfix(sentences=state.counts.sentences, sent_per_s=f"{done / (time.perf_counter() - started):.1f}")
        window, pending = [], 0

    for (s, k), item in items:
        if isinstance(item, InputError):
            streams.write("errors", asdict(item))
            state.counts.failed += 1
            if state.counts.failed <= LOGGED_ERRORS:  # the errors file has them all; the console, the first few
                log.warning("skipped %s", item)
            elif state.counts.failed == LOGGED_ERRORS + 1:
                log.warning("more inputs failed; every one is listed in the errors file")
        else:
            sentences = split_sentences(item.text)
            window.append((item, sentences))
            pending += len(sentences)
        state.next_item = [s, k + 1]
        dirty = True
        if pending >= window_sentences:
            flush()
            dirty = False
    if dirty:
        flush()


def label(cfg: Mapping | DictConfig | LabelOptions, predictor=None) -> LabelSummary:
    """Label every article named by `cfg.inputs`; see `configs/label.yaml` for the options.

    `predictor` (from `load_predictor(cfg.model_dir, ...)`, with the same precision) saves
    loading the model again when a program labels several batches.

    Raises ModelFolderError or LabellingError before any input is read when the model folder,
    the options or the output location cannot work. Bad input files or lines do not raise:
    they are counted and written to OUT.errors.jsonl.
    """
    started = time.perf_counter()
    options = cfg if isinstance(cfg, LabelOptions) else LabelOptions.from_config(cfg)
    kind, labels = check_model_folder(options.model_dir)
    if kind == "tfidf" and options.precision != "fp32":
        log.warning("precision=%s applies to transformer models; the tfidf model ignores it", options.precision)
    paths = options.output
    paths.records.parent.mkdir(parents=True, exist_ok=True)
    sources = discover_inputs(options.inputs, exclude=[paths.work, *paths.finals])
    fingerprint = run_fingerprint(options, kind, sources)
    with _locked(paths.work) as created:
        try:
            state = _start_or_resume(options, fingerprint, labels, created)
        except LabellingError:
            if created:
                shutil.rmtree(paths.work, ignore_errors=True)
            raise
        resumed = state.next_item != [0, 0] or state.phase == "finishing"
        if state.phase == "labelling":
            _run_labelling(options, kind, labels, sources, state, predictor)
        _finish(paths, state)
    n_files = sum(s.kind != "error" for s in sources)
    return LabelSummary(paths, state.counts, n_files, time.perf_counter() - started, resumed)


def load_labelling_predictor(options: LabelOptions, kind: str):
    """The predictor for `options`; the tfidf predictor takes no arithmetic options."""
    predictor_options = {}
    if kind == "transformer":
        predictor_options = {
            "precision": options.precision,
            "batch_size": options.batch_size,
            "max_length": options.max_length,
            "num_threads": options.num_threads,
        }
    try:
        return load_predictor(options.model_dir, **predictor_options)
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"{options.model_dir}: the model cannot be loaded: {error}") from error


def _run_labelling(options: LabelOptions, kind: str, labels: LabelSpace, sources, state: RunState, predictor) -> None:
    if predictor is None:
        predictor = load_labelling_predictor(options, kind)
    items = iter_items(sources, options.jsonl_id_field, options.jsonl_text_field, state.next_item)
    streams = PartialStreams(options.output.work, state)
    bar = tqdm(
        desc="labelling", unit="article", initial=state.counts.articles, disable=not options.progress_bar, smoothing=0.1
    )
    try:
        _label_items(items, predictor, labels, streams, options.window_sentences, bar)
    finally:
        bar.close()
        streams.close()
