"""The local engine: one process streams the inputs through windows of whole articles and checkpoints.

Articles are read lazily; whole articles are gathered into windows of about
`window_sentences` sentences; each window is predicted, written in document order, and
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

import contextlib
import fcntl
import functools
import itertools
import json
import logging
import multiprocessing
import os
import queue
import shutil
import threading
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from diplostance.holders import load_holder_model
from diplostance.labelling.inputs import InputError, Source, iter_items
from diplostance.labelling.model import load_labelling_predictor
from diplostance.labelling.options import (
    FORMAT_SUFFIXES,
    Counts,
    LabellingError,
    LabelOptions,
    LabelSummary,
    OutputExistsError,
    OutputPaths,
)
from diplostance.labelling.records import (
    Window,
    convert_records,
    model_text,
    split_article,
    window_facts,
    window_probs,
    window_records,
)
from diplostance.predictors.folder import predictor_token_facts
from diplostance.schema import LabelSpace

log = logging.getLogger(__name__)

LOGGED_ERRORS = 20
STATE_FILE = "state.json"
STREAMS = {"records": "records.jsonl", "docs": "docs.jsonl", "errors": "errors.jsonl"}


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


WRITE_AHEAD = 2  # windows predicted ahead of the writer: bounds the memory a slow disk can hold up
PREPARE_CHUNK = 64  # items per task handed to a preparing worker process (one tokenizer call each)


class Writer:
    """The output side of a run, on its own thread: records and summaries built, JSON encoded, written and
    checkpointed while the next window is read, split and predicted.

    It alone touches the streams and the run state, in the order the operations were queued, so a
    checkpoint still records exactly the items written before it. An error on the thread is raised
    again in the caller at the next `put` or at `close`.
    """

    def __init__(self, streams: PartialStreams, labels: LabelSpace, bar, holders=None):
        self.streams, self.labels, self.bar = streams, labels, bar
        self.holders = holders  # the model folder's stance-holder model (diplostance.holders), or None
        self.queue: queue.Queue = queue.Queue(maxsize=WRITE_AHEAD)
        self.error: BaseException | None = None
        self.started, self.done = time.perf_counter(), 0
        self.thread = threading.Thread(target=self._run, name="labelling-writer", daemon=True)
        self.thread.start()

    def put(self, *operation) -> None:
        self._raise()
        self.queue.put(operation)

    def close(self) -> None:
        self.queue.put(None)
        self.thread.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        while (operation := self.queue.get()) is not None:
            if self.error is None:
                try:
                    self._do(*operation)
                except BaseException as error:  # handed to the caller's thread
                    self.error = error

    def _do(self, kind: str, *args) -> None:
        state, streams = self.streams.state, self.streams
        if kind == "error":
            item, next_item = args
            streams.write("errors", asdict(item))
            state.counts.failed += 1
            state.next_item = next_item
            return
        window, probs, facts, next_item = args  # kind == "window": predicted; written, then checkpointed
        _write_window(window, probs, streams, self.labels, self.holders)
        sentences = sum(len(sentences) for _, sentences in window)
        state.counts.articles += len(window)
        state.counts.sentences += sentences
        for key, value in facts.items():  # sentences cut, word pieces read, unknown pieces (records.window_facts)
            setattr(state.counts, key, getattr(state.counts, key) + value)
        state.next_item = next_item
        streams.checkpoint()
        self.done += sentences
        self.bar.update(len(window))
        rate = self.done / max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix(sentences=state.counts.sentences, sent_per_s=f"{rate:.1f}")


def _write_window(window: Window, probs, streams: PartialStreams, labels: LabelSpace, holders=None) -> None:
    """A predicted window's sentence records and article summaries, appended to the streams."""
    for records, doc in window_records(window, probs, labels, holders) if window else ():
        for record in records:
            streams.write("records", record)
        streams.write("docs", doc)


_ENCODE = None  # the predictor's encode, inherited by the forked preparing workers
_FACTS = None  # and its token facts (predictors.folder.predictor_token_facts): [pieces, unknown, cut] per text


def _prepare_chunk(chunk: list) -> list:
    """A worker's share, a chunk of items: each article split into sentences and, where the predictor can,
    the chunk's distinct sentences normalised and tokenised by one batch call of its tokenizer
    (predictor.encode), so the labelling process only predicts and writes. Each entry: (position, the
    split article or the InputError, {sentence text: token ids} or None when not encoded)."""
    split = [(position, item if isinstance(item, InputError) else split_article(item)) for position, item in chunk]
    if _ENCODE is None:
        return [(position, entry, None, None) for position, entry in split]
    texts = list(
        dict.fromkeys(model_text(s.text) for _, entry in split if not isinstance(entry, InputError) for s in entry[1])
    )
    ids = dict(zip(texts, _ENCODE(texts), strict=True)) if texts else {}
    found = _FACTS(texts) if texts and _FACTS is not None else None
    facts = dict(zip(texts, found.tolist(), strict=True)) if found is not None else {}
    out = []
    for position, entry in split:
        if isinstance(entry, InputError):
            out.append((position, entry, None, None))
            continue
        inputs = [model_text(s.text) for s in entry[1]]
        out.append((position, entry, {t: ids[t] for t in inputs}, {t: facts[t] for t in inputs if t in facts}))
    return out


def _chunked(items, size: int):
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _prepared_inline(items):
    for position, item in items:
        yield position, (item if isinstance(item, InputError) else split_article(item)), None, None


@contextlib.contextmanager
def _preparing(items, predictor, workers: int):
    """The items split (and encoded) in `workers` forked processes, in input order; 0: in this process."""
    if workers <= 0:
        yield _prepared_inline(items)
        return
    global _ENCODE, _FACTS
    encode = getattr(predictor, "encode", None) if hasattr(predictor, "predict_encoded") else None
    saved = os.environ.get("TOKENIZERS_PARALLELISM")
    _ENCODE, os.environ["TOKENIZERS_PARALLELISM"] = encode, "false"  # one tokenizer thread per worker
    _FACTS = functools.partial(predictor_token_facts, predictor)
    try:
        pool = multiprocessing.get_context("fork").Pool(workers)
    finally:
        _ENCODE = _FACTS = None
        if saved is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = saved
    try:
        chunks = pool.imap(_prepare_chunk, _chunked(items, PREPARE_CHUNK))
        yield (entry for chunk in chunks for entry in chunk)
    finally:
        pool.terminate()
        pool.join()


def prepare_workers(options: LabelOptions, predictor) -> int:
    """`prepare_workers`, or by default: none when the model runs on the CPU (its cores do the model's
    arithmetic), and up to 8 processes (leaving two cores) when it runs on a GPU, which one process
    splitting, normalising and tokenising cannot keep busy."""
    if options.prepare_workers is not None:
        return options.prepare_workers
    device = getattr(predictor, "device", None)
    if device is None or torch_device_type(device) != "cuda":
        return 0
    return max(0, min(8, (os.cpu_count() or 1) - 2))


def torch_device_type(device) -> str:
    return getattr(device, "type", str(device).split(":")[0])


def _label_items(prepared, predictor, writer: Writer, window_sentences: int, failed: int) -> None:
    window: Window = []
    encoded: dict[str, list[int]] | None = {}
    facts: dict[str, list[int]] | None = {}  # model text -> [pieces, unknown, cut], when the workers made them
    pending = 0  # sentences in the window
    dirty = False  # items consumed since the last checkpoint
    next_item = None

    def flush() -> None:
        nonlocal window, pending, encoded, facts
        probs = window_probs(predictor, window, encoded) if window else None
        counts = window_facts(predictor, window, facts) if window else {}
        writer.put("window", window, probs, counts, next_item)
        window, pending, encoded, facts = [], 0, {}, {}

    for (s, k), entry, entry_encoded, entry_facts in prepared:
        next_item = [s, k + 1]
        if isinstance(entry, InputError):
            writer.put("error", entry, next_item)
            failed += 1
            if failed <= LOGGED_ERRORS:  # the errors file has them all; the console, the first few
                log.warning("skipped %s", entry)
            elif failed == LOGGED_ERRORS + 1:
                log.warning("more inputs failed; every one is listed in the errors file")
        else:
            window.append(entry)
            pending += len(entry[1])
            if entry_encoded is None:
                encoded = None  # prepared in this process: the predictor encodes the window itself
            elif encoded is not None:
                encoded.update(entry_encoded)
            if entry_facts is None:
                facts = None  # made in this process, for the window
            elif facts is not None:
                facts.update(entry_facts)
        dirty = True
        if pending >= window_sentences:
            flush()
            dirty = False
    if dirty:
        flush()


def label_locally(
    options: LabelOptions, kind: str, labels: LabelSpace, sources: list[Source], fingerprint: dict, predictor=None
) -> LabelSummary:
    started = time.perf_counter()
    paths = options.output
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


def _run_labelling(options: LabelOptions, kind: str, labels: LabelSpace, sources, state: RunState, predictor) -> None:
    if predictor is None:
        predictor = load_labelling_predictor(options, kind)
    items = iter_items(sources, options.jsonl_id_field, options.jsonl_text_field, state.next_item)
    streams = PartialStreams(options.output.work, state)
    bar = tqdm(
        desc="labelling", unit="article", initial=state.counts.articles, disable=not options.progress_bar, smoothing=0.1
    )
    writer = Writer(streams, labels, bar, load_holder_model(options.model_dir))
    try:
        with _preparing(items, predictor, prepare_workers(options, predictor)) as prepared:
            _label_items(prepared, predictor, writer, options.window_sentences, state.counts.failed)
    finally:
        try:
            writer.close()  # what was predicted is written and checkpointed, also when reading failed
        finally:
            bar.close()
            streams.close()
