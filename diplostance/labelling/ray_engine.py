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

Before any work the folder must be new, empty, or hold only these names (anything else is refused:
a foreign file there would be read with the records), and the Ray runtime must have the CPUs and GPUs
the actor pool asks for (a pool it cannot place would wait forever). A rerun trusts a commit marker
only when the part's three files are there with the sizes and row counts the marker records. Local
inputs are read, and named in records, by their absolute path (Ray's workers need not share the driver's
folder), and a part is named after its input's resolved path: `in/a.jsonl` and `/abs/in/a.jsonl` are one.
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
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from diplostance.holders import load_holder_model
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
from diplostance.labelling.records import label_window, records_table, split_article, unflatten, window_facts
from diplostance.schema import LabelSpace
from diplostance.text import Sentence

log = logging.getLogger(__name__)

PART_FORMATS = {"parquet": ".parquet", "jsonl": ".jsonl"}
# Reading and splitting is light next to prediction, and must never wait for cores the actors hold (with
# actors on every core, read tasks that asked for CPU would never start): no CPU asked, a few at a time.
READ_TASKS = 4
MANIFEST, RUN_FILE = "manifest.json", "run.json"
PART_FOLDERS = ("records", "docs", "errors", "committed")
OWN_NAMES = {*PART_FOLDERS, "_tmp", MANIFEST, RUN_FILE}
PART_NAME = re.compile(r"[\w.-]{1,40}-[0-9a-f]{12}-\d{5}")


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
        files = {"records": data, "docs": _jsonl(docs), "errors": _jsonl(errors)}
        for what, content in files.items():
            self.write(part_file(what, part, fmt), content)
        meta = {**meta, "bytes": {what: len(content) for what, content in files.items()}}
        self.write(f"committed/{part}.json", json.dumps(meta).encode("utf-8"))

    def entries(self, *names: str) -> list:
        """The FileInfo of each entry directly in a folder of the output (none when it is not there)."""
        import pyarrow.fs as pafs

        return self.fs.get_file_info(pafs.FileSelector(self.path(*names), allow_not_found=True))

    def foreign(self) -> str | None:
        """The first entry that this engine does not write (None when the folder is new, empty or all ours)."""
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(self.path())
        if info.type == pafs.FileType.NotFound:
            return None
        if info.type != pafs.FileType.Directory:
            return "(it is a file)"
        for entry in self.entries():
            name = Path(entry.path).name
            if name not in OWN_NAMES:
                return name
            is_folder = entry.type == pafs.FileType.Directory
            if is_folder != (name in PART_FOLDERS or name == "_tmp"):
                return name
            if name not in PART_FOLDERS:
                continue
            suffixes = (
                {".json"} if name == "committed" else {*PART_FORMATS.values()} if name == "records" else {".jsonl"}
            )
            for inner in self.entries(name):
                stem, suffix = os.path.splitext(Path(inner.path).name)
                if inner.type != pafs.FileType.File or suffix not in suffixes or not PART_NAME.fullmatch(stem):
                    return f"{name}/{Path(inner.path).name}"
        return None

    def verified_markers(self, fmt: str) -> dict[str, dict]:
        """The commit markers whose part files are all there, with the sizes and row counts they record.
        A marker that fails is removed (its part is labelled again) and the reason logged."""
        sizes = {f"{folder}/{Path(e.path).name}": e.size for folder in PART_FOLDERS[:3] for e in self.entries(folder)}
        good = {}
        for part, meta in self.markers().items():
            problem = self._part_problem(part, meta, fmt, sizes)
            if problem:
                log.warning("part %s is labelled again: %s", part, problem)
                self.fs.delete_file(self.path("committed", f"{part}.json"))
            else:
                good[part] = meta
        return good

    def _part_problem(self, part: str, meta: dict, fmt: str, sizes: dict[str, int]) -> str:
        rows = {"records": meta.get("sentences"), "docs": meta.get("articles"), "errors": meta.get("failed")}
        for what, expected_rows in rows.items():
            name = part_file(what, part, fmt)
            if name not in sizes:
                return f"{name} is missing"
            expected_bytes = (meta.get("bytes") or {}).get(what)
            if expected_bytes is not None and sizes[name] != expected_bytes:
                return f"{name} has {sizes[name]} bytes, its commit marker says {expected_bytes}"
            found = self.count_rows(name)
            if found != expected_rows:
                return f"{name} holds {found} rows, its commit marker says {expected_rows}"
        return ""

    def count_rows(self, name: str) -> int | None:
        try:
            if name.endswith(".parquet"):
                import pyarrow.parquet as pq

                return pq.read_metadata(self.path(name), filesystem=self.fs).num_rows
            with self.fs.open_input_stream(self.path(name)) as handle:
                data = handle.read()
            return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
        except (OSError, ValueError):  # unreadable: not a part this run can trust
            return None

    def remove_parts_except(self, parts: Sequence[str], fmt: str) -> list[str]:
        """Delete the part files and markers of parts not in `parts` (this format): left by older runs of
        the same inputs (another format, an input spelt otherwise), they would be read with the records."""
        keep = {part_file(what, p, fmt) for p in parts for what in ("records", "docs", "errors")}
        keep |= {f"committed/{p}.json" for p in parts}
        removed = []
        for folder in PART_FOLDERS:
            for entry in self.entries(folder):
                name = f"{folder}/{Path(entry.path).name}"
                if name not in keep:
                    self.fs.delete_file(entry.path)
                    removed.append(name)
        return removed


def _jsonl(rows) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in rows)


def part_file(what: str, part: str, fmt: str) -> str:
    """records/<part>.parquet|.jsonl, docs/<part>.jsonl or errors/<part>.jsonl."""
    return f"records/{part}{PART_FORMATS[fmt]}" if what == "records" else f"{what}/{part}.jsonl"


def part_prefix(path: str) -> str:
    """A part name derived from the input: readable stem and a hash of the full resolved path (stems repeat;
    `in/a.jsonl` and `/abs/in/a.jsonl` are one input, so one part)."""
    path = path if is_uri(path) else str(Path(path).resolve())
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


def actor_device(device: str | None, num_gpus_per_actor: float) -> str:
    """The device an actor loads its model on. Ray shows an actor given GPUs only those (CUDA_VISIBLE_DEVICES),
    as cuda:0, cuda:1, ...: `cuda:N` (and `auto`) there is the actor's own first GPU, `cuda`. Actors given
    no GPU cannot run `cuda`: refused before any work. `cpu` stays the CPU."""
    name = str(device or "auto").strip().lower()
    on_gpu = re.fullmatch(r"cuda(:\d+)?", name) is not None
    if num_gpus_per_actor > 0:
        return "cuda" if on_gpu or name == "auto" else name
    if on_gpu:
        raise LabellingError(
            f"device={name} with engine=ray needs ray.num_gpus_per_actor > 0 (1: one GPU per actor); "
            "Ray gives the actors no GPU otherwise"
        )
    return name


class PartLabeller:
    """Stage 2 (a pool of Ray actors): each loads the model once, then predicts, writes and commits parts."""

    def __init__(self, options: LabelOptions, kind: str, labels: LabelSpace, fmt: str):
        device = actor_device(options.device, options.ray.num_gpus_per_actor)
        self.predictor = load_labelling_predictor(options, kind, device=device)
        self.holders = load_holder_model(options.model_dir)  # stance holders, when the folder has a model
        self.store, self.labels, self.fmt = PartStore(options.output.folder), labels, fmt
        self.actor = f"{os.uname().nodename}:{os.getpid()}"  # per-actor throughput, from the markers

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"part": [], **{key: [] for key in asdict(Counts())}}
        for part, slice_no, last, payload, source in zip(
            batch["part"], batch["slice"], batch["last"], batch["payload"], batch["source"], strict=True
        ):
            started = time.perf_counter()
            content = json.loads(payload)
            window = [
                (Article(a["doc_id"], "", a["source"]), [Sentence(*s) for s in a["sentences"]])
                for a in content["articles"]
            ]
            labelled = label_window(self.predictor, window, self.labels, self.holders) if window else []
            records = [r for rs, _ in labelled for r in rs]
            counts = {"articles": len(window), "sentences": len(records), "failed": len(content["errors"])}
            counts.update(window_facts(self.predictor, window))  # sentences cut, word pieces read, <unk> pieces
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


def _check_resources(options: LabelOptions) -> None:
    """Refuse an actor pool the runtime cannot place: Ray would wait for the missing CPUs or GPUs forever."""
    import ray

    have = ray.cluster_resources()
    r = options.ray
    where = f"the Ray cluster at {r.address}" if r.address else "the local Ray runtime"
    for resource, per_actor in (("GPU", r.num_gpus_per_actor), ("CPU", r.num_cpus_per_actor)):
        need, available = per_actor * r.concurrency, have.get(resource, 0.0)
        if need > available:
            raise LabellingError(
                f"ray.concurrency={r.concurrency} actors x ray.num_{resource.lower()}s_per_actor={per_actor:g} need "
                f"{need:g} {resource}(s), and {where} has {available:g}: lower them, or join a cluster that has them"
            )


def _existing_output(store: PartStore, options: LabelOptions, fingerprint: dict) -> str:
    """The rules on what the output folder already holds, applied before anything is written or started:
    'new' (nothing of ours there), 'resume' (an interrupted run of this command) or 'clear'."""
    foreign = store.foreign()
    if foreign:
        raise LabellingError(
            f"output folder {store.folder} holds {foreign!r}, which the Ray engine does not write: choose a new "
            "or empty folder (overwrite=true replaces a Ray-engine output, never other files)"
        )
    if store.exists(MANIFEST):
        if not options.overwrite:
            raise OutputExistsError(f"{store.folder} holds a finished run ({MANIFEST}); pass overwrite=true to replace")
        return "clear"
    try:
        previous = store.read_json(RUN_FILE) if store.exists(RUN_FILE) else None
    except (OSError, ValueError):
        previous = {}  # unreadable: settings unknown
    if previous is None and not any(store.entries(folder) for folder in PART_FOLDERS):
        return "new"
    if previous != fingerprint and options.resume and not options.overwrite:
        changed = sorted(k for k in fingerprint if (previous or {}).get(k) != fingerprint[k])
        what = (
            f"other settings (changed: {', '.join(changed)})"
            if previous
            else f"unknown settings (no readable {RUN_FILE})"
        )
        raise LabellingError(
            f"{store.folder} holds an interrupted run with {what}; rerun that command to finish it, or pass "
            "overwrite=true (or resume=false) to discard it"
        )
    if previous != fingerprint or not options.resume or options.overwrite:
        return "clear"
    return "resume"


def _prepare(store: PartStore, action: str, fingerprint: dict) -> bool:
    """Clear or keep the folder as decided; True when committed parts of an interrupted run are kept."""
    if action == "clear":
        store.clear()
    if store.exists("_tmp"):
        store.fs.delete_dir(store.path("_tmp"))  # leftovers of a killed writer, never committed
    store.write(RUN_FILE, json.dumps(fingerprint, indent=1).encode("utf-8"))
    return action == "resume"


def label_with_ray(
    options: LabelOptions, kind: str, labels: LabelSpace, sources: Sequence[Source], fingerprint: dict
) -> LabelSummary:
    import ray

    started = time.perf_counter()
    fmt = options.output.format
    if fmt not in PART_FORMATS:
        raise LabellingError(f"engine=ray writes {' or '.join(PART_FORMATS)} parts, not {fmt}: set output.format")
    actor_device(options.device, options.ray.num_gpus_per_actor)  # cuda with GPU-less actors: refused now
    # Ray's workers may run elsewhere, or in another folder: they read, and records name, absolute paths
    sources = [s if is_uri(s.path) else replace(s, path=os.path.abspath(s.path)) for s in sources]
    # a slice's articles depend on the part size: a resume with another one would skip or repeat articles
    fingerprint = {**fingerprint, "ray.articles_per_part": options.ray.articles_per_part}
    store = PartStore(options.output.folder)
    action = _existing_output(store, options, fingerprint)
    started_here = _connect(options)
    try:
        _check_resources(options)
        resumed = _prepare(store, action, fingerprint)
        markers = store.verified_markers(fmt) if resumed else {}
        prefixes = [part_prefix(s.path) for s in sources]
        pending = [
            {"path": s.path, "kind": s.kind, "problem": s.problem, "prefix": p,
             "done": json.dumps(sorted(m["slice"] for n, m in markers.items() if n.startswith(p + "-")))}
            for s, p in zip(sources, prefixes, strict=True) if not _complete(p, markers)
        ]  # fmt: skip
        log.info("%d of %d input files to label (%d parts committed before)", len(pending), len(sources), len(markers))
        if pending:
            _run_pipeline(options, kind, labels, fmt, pending)
    finally:
        if started_here:
            ray.shutdown()
    markers = store.markers()
    parts = []
    for source, prefix in zip(sources, prefixes, strict=True):
        if not _complete(prefix, markers):
            raise LabellingError(f"{source.path}: not every part was committed; rerun the command to finish")
        parts += sorted((m for n, m in markers.items() if n.startswith(prefix + "-")), key=lambda m: m["slice"])
    removed = store.remove_parts_except([p["part"] for p in parts], fmt)
    if removed:
        log.warning("removed %d files of parts that are not this run's (e.g. %s)", len(removed), removed[0])
    counts = Counts(**{key: sum(p.get(key, 0) for p in parts) for key in asdict(Counts())})  # older markers: 0
    manifest = {"format": fmt, "labels": {"targets": list(labels.targets), "polarities": list(labels.polarities)},
                "totals": asdict(counts), "parts": parts}  # fmt: skip
    if store.exists("_tmp"):
        store.fs.delete_dir(store.path("_tmp"))
    store.write(MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False).encode("utf-8"))
    n_files = sum(s.kind != "error" for s in sources)
    where = f"{options.output.folder}/ (records/, docs/, errors/, {MANIFEST})"
    return LabelSummary(options.output, counts, n_files, time.perf_counter() - started, resumed, outputs=where)


def _run_pipeline(options: LabelOptions, kind: str, labels: LabelSpace, fmt: str, pending: list[dict]) -> None:
    import ray.data

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
