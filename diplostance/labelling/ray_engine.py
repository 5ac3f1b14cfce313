"""The Ray Data engine: the same reading, splitting, predicting and record building as the local engine,
run as a Ray Data pipeline so that it grows past one process and one machine.

    inputs --listed--> one row per input file --flat_map (tasks): read, split--> one row per part
           --map_batches (a pool of actors, each loading the model once): predict, write, commit--> counts

A part is an input file, or a slice of `ray.articles_per_part` articles of a large one, named after
the input (`<stem>-<hash of the path>-<slice>`). Its records, summaries and errors are written under
temporary names and moved into place, then its commit marker `committed/<part>.json` is written last:
a part is either committed or redone. A rerun after a kill lists the markers, skips committed parts
and redoes the rest; `manifest.json` (parts in input order, counts, totals) appears once every part
is committed, and marks the output as finished. Output folder (a local path or any pyarrow URI):

    OUT/records/<part>.parquet|.jsonl   one record per sentence, the local engine's fields
    OUT/docs/<part>.jsonl               one summary per article
    OUT/errors/<part>.jsonl             inputs (files or lines) that could not be read
    OUT/committed/<part>.json           the commit markers
    OUT/run.json                        the settings a rerun must share (model, precision, inputs)
    OUT/manifest.json                   written last
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from diplostance.labelling.inputs import Article, InputError, Source, read_source
from diplostance.labelling.model import load_labelling_predictor
from diplostance.labelling.options import (
    Counts,
    LabellingError,
    LabelOptions,
    LabelSummary,
    OutputExistsError,
    is_uri,
)
from diplostance.labelling.records import label_window, records_table, split_article, unflatten
from diplostance.schema import LabelSpace
from diplostance.text import Sentence

log = logging.getLogger(__name__)

PART_FORMATS = {"parquet": ".parquet", "jsonl": ".jsonl"}
# Reading and splitting is light next to prediction, and must never wait for cores the actors hold (with
# actors on every core, read tasks that asked for CPU would never start): no CPU asked, a few at a time.
READ_TASKS = 4
MANIFEST, RUN_FILE = "manifest.json", "run.json"


# ---------------------------------------------------------------------------- the output folder


class PartStore:
    """The output folder on any pyarrow filesystem: atomic writes, commit markers, the manifest."""

    def __init__(self, folder: str):
        import pyarrow.fs as pafs

        if is_uri(folder):
            self.fs, self.root = pafs.FileSystem.from_uri(folder)
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(folder)
        self.folder = folder

    def path(self, *names: str) -> str:
        return "/".join([self.root.rstrip("/"), *names])

    def exists(self, *names: str) -> bool:
        import pyarrow.fs as pafs

        return self.fs.get_file_info(self.path(*names)).type != pafs.FileType.NotFound

    def read_json(self, *names: str):
        with self.fs.open_input_stream(self.path(*names)) as handle:
            return json.loads(handle.read().decode("utf-8"))

    def write(self, name: str, data: bytes, tmp_dir: str = "_tmp") -> None:
        """`name` appears whole or not at all: written under a temporary name, then moved."""
        tmp = self.path(tmp_dir, f"{uuid.uuid4().hex}-{Path(name).name}")
        self.fs.create_dir(self.path(tmp_dir), recursive=True)
        self.fs.create_dir(str(Path(self.path(name)).parent), recursive=True)
        with self.fs.open_output_stream(tmp) as handle:
            handle.write(data)
        self.fs.move(tmp, self.path(name))

    def markers(self) -> dict[str, dict]:
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self.path("committed"), allow_not_found=True)
        found = [f.path for f in self.fs.get_file_info(selector) if f.path.endswith(".json")]
        return {Path(p).stem: self.read_json("committed", Path(p).name) for p in found}

    def clear(self) -> None:
        if self.exists():
            self.fs.delete_dir(self.root)

    def commit(self, part: str, fmt: str, records, docs, errors, meta: dict, labels: LabelSpace) -> None:
        """Write a part's three files, then its marker: the marker names a part whose files are all there."""
        if fmt == "parquet":
            import pyarrow.parquet as pq

            buffer = io.BytesIO()
            pq.write_table(records_table(records, labels), buffer)
            data = buffer.getvalue()
        else:
            data = _jsonl(records)
        self.write(f"records/{part}{PART_FORMATS[fmt]}", data)
        self.write(f"docs/{part}.jsonl", _jsonl(docs))
        self.write(f"errors/{part}.jsonl", _jsonl(errors))
        self.write(f"committed/{part}.json", json.dumps(meta).encode("utf-8"))


def _jsonl(rows) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows)


def part_prefix(path: str) -> str:
    """A part name derived from the input: readable stem and a hash of the full path (stems repeat)."""
    stem = re.sub(r"[^\w.-]", "_", Path(path).stem)[:40] or "input"
    return f"{stem}-{hashlib.sha256(path.encode('utf-8')).hexdigest()[:12]}"


def _complete(prefix: str, markers: dict[str, dict]) -> bool:
    own = sorted(m["slice"] for name, m in markers.items() if name.startswith(prefix + "-"))
    last = [m for name, m in markers.items() if name.startswith(prefix + "-") and m["last"]]
    return bool(last) and own == list(range(last[0]["slice"] + 1))


# ---------------------------------------------------------------------------- the pipeline's stages


def read_parts(row: dict, id_field: str, text_field: str, per_part: int) -> Iterator[dict]:
    """Stage 1 (a Ray task per input file): the file's articles split into sentences, its errors, in
    slices of `per_part` items; slices already committed are skipped."""
    source = Source(str(row["path"]), str(row["kind"]), str(row["problem"]))
    done = set(json.loads(row["done"]))
    first = min(set(range(len(done) + 1)) - done)  # the first slice to redo; the ones before are not parsed
    items: list = []
    index = first * per_part
    slice_no = first

    def emit(last: bool) -> dict:
        articles = [
            {"doc_id": a.doc_id, "source": a.source, "sentences": [[s.start, s.end, s.text] for s in sentences]}
            for a, sentences in (split_article(i) for i in items if isinstance(i, Article))
        ]
        errors = [asdict(i) for i in items if isinstance(i, InputError)]
        payload = json.dumps({"articles": articles, "errors": errors}, ensure_ascii=False)
        return {"part": f"{row['prefix']}-{slice_no:05d}", "slice": slice_no, "last": last, "payload": payload,
                "source": source.path}  # fmt: skip

    for _, item in read_source(source, id_field, text_field, skip=index):
        items.append(item)
        if len(items) == per_part:
            if slice_no not in done:
                yield emit(last=False)
            items, slice_no = [], slice_no + 1
    if slice_no not in done:
        yield emit(last=True)  # the last slice, possibly empty: it tells that the file ended


class PartLabeller:
    """Stage 2 (a pool of Ray actors): each loads the model once, then predicts, writes and commits parts."""

    def __init__(self, options: LabelOptions, kind: str, labels: LabelSpace, fmt: str):
        self.predictor = load_labelling_predictor(options, kind)
        self.store, self.labels, self.fmt = PartStore(options.output.folder), labels, fmt
        self.actor = f"{os.uname().nodename}:{os.getpid()}"  # per-actor throughput, from the markers

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out = {"part": [], "articles": [], "sentences": [], "failed": []}
        for part, slice_no, last, payload, source in zip(
            batch["part"], batch["slice"], batch["last"], batch["payload"], batch["source"], strict=True
        ):
            started = time.perf_counter()
            content = json.loads(payload)
            window = [
                (Article(a["doc_id"], "", a["source"]), [Sentence(*s) for s in a["sentences"]])
                for a in content["articles"]
            ]
            labelled = label_window(self.predictor, window, self.labels) if window else []
            records = [r for rs, _ in labelled for r in rs]
            counts = {"articles": len(window), "sentences": len(records), "failed": len(content["errors"])}
            meta = {"part": str(part), "source": str(source), "slice": int(slice_no), "last": bool(last), **counts,
                    "actor": self.actor, "seconds": round(time.perf_counter() - started, 4)}  # fmt: skip
            self.store.commit(str(part), self.fmt, records, [d for _, d in labelled], content["errors"], meta,
                              self.labels)  # fmt: skip
            out["part"].append(str(part))
            for key, value in counts.items():
                out[key].append(value)
        return out


# ---------------------------------------------------------------------------- the run


def _connect(options: LabelOptions) -> bool:
    """Join `ray.address`, or start a local runtime with the machine's cores; True when this call started it."""
    import ray

    if ray.is_initialized():
        return False
    settings = {"include_dashboard": False, "logging_level": logging.WARNING, "log_to_driver": True}
    if options.ray.address:
        ray.init(address=options.ray.address, **settings)
    else:
        ray.init(num_cpus=options.ray.num_cpus or os.cpu_count(), **settings)
    return True


def _prepare(store: PartStore, options: LabelOptions, fingerprint: dict) -> bool:
    """Apply the rules on existing output; True when committed parts of an interrupted run are kept."""
    if store.exists(MANIFEST):
        if not options.overwrite:
            raise OutputExistsError(f"{store.folder} holds a finished run ({MANIFEST}); pass overwrite=true to replace")
        store.clear()
    elif store.exists(RUN_FILE):
        previous = store.read_json(RUN_FILE)
        if previous != fingerprint and options.resume and not options.overwrite:
            changed = sorted(k for k in fingerprint if previous.get(k) != fingerprint[k])
            raise LabellingError(
                f"{store.folder} holds an interrupted run with other settings (changed: {', '.join(changed)}); rerun "
                "that command to finish it, or pass overwrite=true (or resume=false) to discard it"
            )
        if previous != fingerprint or not options.resume or options.overwrite:
            store.clear()
    resumed = store.exists(RUN_FILE)
    if store.exists("_tmp"):
        store.fs.delete_dir(store.path("_tmp"))  # leftovers of a killed writer, never committed
    store.write(RUN_FILE, json.dumps(fingerprint, indent=1).encode("utf-8"))
    return resumed


def label_with_ray(
    options: LabelOptions, kind: str, labels: LabelSpace, sources: Sequence[Source], fingerprint: dict
) -> LabelSummary:
    started = time.perf_counter()
    fmt = options.output.format
    if fmt not in PART_FORMATS:
        raise LabellingError(f"engine=ray writes {' or '.join(PART_FORMATS)} parts, not {fmt}: set output.format")
    store = PartStore(options.output.folder)
    resumed = _prepare(store, options, fingerprint)
    markers = store.markers()
    prefixes = [part_prefix(s.path) for s in sources]
    pending = [
        {"path": s.path, "kind": s.kind, "problem": s.problem, "prefix": p,
         "done": json.dumps(sorted(m["slice"] for n, m in markers.items() if n.startswith(p + "-")))}
        for s, p in zip(sources, prefixes, strict=True) if not _complete(p, markers)
    ]  # fmt: skip
    log.info("%d of %d input files to label (%d parts committed before)", len(pending), len(sources), len(markers))
    if pending:
        _run_pipeline(options, kind, labels, fmt, pending)
    markers = store.markers()
    parts = []
    for source, prefix in zip(sources, prefixes, strict=True):
        if not _complete(prefix, markers):
            raise LabellingError(f"{source.path}: not every part was committed; rerun the command to finish")
        parts += sorted((m for n, m in markers.items() if n.startswith(prefix + "-")), key=lambda m: m["slice"])
    counts = Counts(*(sum(p[key] for p in parts) for key in ("articles", "sentences", "failed")))
    manifest = {"format": fmt, "labels": {"targets": list(labels.targets), "polarities": list(labels.polarities)},
                "totals": asdict(counts), "parts": parts}  # fmt: skip
    if store.exists("_tmp"):
        store.fs.delete_dir(store.path("_tmp"))
    store.write(MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
    n_files = sum(s.kind != "error" for s in sources)
    where = f"{options.output.folder}/ (records/, docs/, errors/, {MANIFEST})"
    return LabelSummary(options.output, counts, n_files, time.perf_counter() - started, resumed, outputs=where)


def _run_pipeline(options: LabelOptions, kind: str, labels: LabelSpace, fmt: str, pending: list[dict]) -> None:
    import ray
    import ray.data

    started_here = _connect(options)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = options.progress_bar
        r = options.ray
        dataset = ray.data.from_items(pending, override_num_blocks=len(pending))
        dataset = dataset.flat_map(
            read_parts,
            fn_kwargs={"id_field": options.jsonl_id_field, "text_field": options.jsonl_text_field,
                       "per_part": r.articles_per_part},
            num_cpus=0,
            compute=ray.data.TaskPoolStrategy(size=READ_TASKS),
        )  # fmt: skip
        dataset = dataset.map_batches(
            PartLabeller,
            fn_constructor_kwargs={"options": options, "kind": kind, "labels": labels, "fmt": fmt},
            batch_size=1,  # one part per call: each part is committed as soon as it is labelled
            compute=ray.data.ActorPoolStrategy(size=r.concurrency),
            num_cpus=r.num_cpus_per_actor,
            num_gpus=r.num_gpus_per_actor,
        )
        done = dataset.take_all()
        log.info("labelled %d parts", len(done))
    finally:
        if started_here:
            ray.shutdown()


def read_output(folder: str, what: str = "records") -> list[dict]:
    """A finished output's records (nested, as the local engine writes them), docs or errors, in input order."""
    store = PartStore(folder)
    manifest = store.read_json(MANIFEST)
    labels = LabelSpace(tuple(manifest["labels"]["targets"]), tuple(manifest["labels"]["polarities"]))
    rows: list[dict] = []
    for part in manifest["parts"]:
        if what == "records" and manifest["format"] == "parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(store.path("records", part["part"] + ".parquet"), filesystem=store.fs)
            rows += [unflatten(row, labels) for row in table.to_pylist()]
            continue
        suffix = PART_FORMATS[manifest["format"]] if what == "records" else ".jsonl"
        with store.fs.open_input_stream(store.path(what, part["part"] + suffix)) as handle:
            rows += [json.loads(line) for line in handle.read().decode("utf-8").splitlines()]
    return rows
