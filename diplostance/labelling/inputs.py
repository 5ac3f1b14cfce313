"""Listing and reading the inputs: files, folders, glob patterns and pyarrow filesystem URIs
(s3://..., file://...), turned into articles or into input errors that name the file, line and reason."""

from __future__ import annotations

import codecs
import errno
import fnmatch
import glob
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from diplostance.labelling.options import LabellingError, OutputPaths, is_uri

INPUT_KINDS = {".txt": "txt", ".jsonl": "jsonl"}
GLOB_CHARS = frozenset("*?[")
SNIFF_BYTES = 8192  # a NUL byte in the first 8 KiB means binary, as git decides


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


# ---------------------------------------------------------------------------- listing


def _file_source(path: str) -> Source:
    kind = INPUT_KINDS.get(Path(path).suffix.lower())
    if kind:
        return Source(path, kind)
    suffix = Path(path).suffix or "(no suffix)"
    return Source(path, "error", f"unsupported file type {suffix!r}: inputs are .txt or .jsonl files")


def _broken_link(path: Path) -> str:
    """Why a symbolic link leads to no file (or '' when it does)."""
    try:
        path.stat()
    except FileNotFoundError:
        return f"dangling symbolic link to {os.readlink(path)!r}: the target does not exist"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "symbolic link loop: the link points back to itself"
        return f"cannot be read: {error.strerror or error}"
    return ""


def _list_uri(uri: str) -> list[Source]:
    """Files under a pyarrow filesystem URI: the file itself, or a folder recursively (hidden entries skipped)."""
    import pyarrow.fs as pafs

    scheme = uri[: uri.index("://") + 3]
    try:
        fs, root = pafs.FileSystem.from_uri(uri)
        info = fs.get_file_info(root)
        if info.type == pafs.FileType.NotFound:
            return [Source(uri, "error", "no such file or folder")]
        if info.type == pafs.FileType.File:
            return [_file_source(uri)]
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
    except (OSError, ValueError) as error:
        return [Source(uri, "error", f"cannot be listed: {error}")]
    files = sorted(f.path for f in found if f.type == pafs.FileType.File)
    relative = [p[len(root) :].lstrip("/") for p in files]
    return [_file_source(scheme + p) for p, r in zip(files, relative, strict=True) if not r.startswith(".")
            and "/." not in r]  # fmt: skip


def discover_inputs(inputs: Iterable[str], exclude: Iterable[Path] = ()) -> list[Source]:
    """Files named by `inputs` in a stable order: files as given, folders recursively (sorted,
    hidden entries skipped), glob patterns sorted, URIs through pyarrow's filesystems. Each file
    appears once; `exclude` never does, nor a Hydra run folder (log, config) inside a folder. Names that
    match nothing, and symbolic links in a folder that lead nowhere, become 'error' sources."""
    excluded = [Path(p).resolve() for p in exclude]
    sources: list[Source] = []
    seen: set[str] = set()

    def add_file(path: Path) -> None:
        resolved = path.resolve()
        if str(resolved) in seen or any(resolved == e or e in resolved.parents for e in excluded):
            return
        seen.add(str(resolved))
        sources.append(_file_source(str(path)))

    def add(path: Path) -> None:
        if not path.is_dir():
            return add_file(path)
        # Hydra run folders (a `.hydra/` beside the log) inside an input folder hold logs and run outputs
        runs = {p.parent for p in path.rglob(".hydra") if p.is_dir() and p.parent != path}
        for child in sorted(path.rglob("*")):
            if any(part.startswith(".") for part in child.relative_to(path).parts):
                continue
            if child in runs or not runs.isdisjoint(child.parents):
                continue
            if child.is_file():
                add_file(child)
            elif child.is_symlink() and (problem := _broken_link(child)) and str(child) not in seen:
                seen.add(str(child))
                sources.append(Source(str(child), "error", problem))

    for item in inputs:
        item = str(item)
        if is_uri(item):
            for source in _list_uri(item):
                if source.path not in seen:
                    seen.add(source.path)
                    sources.append(source)
            continue
        item = os.path.expanduser(item)
        if GLOB_CHARS.intersection(item) and not Path(item).exists():
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                sources.append(Source(item, "error", "the pattern matches no files"))
            for match in matches:
                add(Path(match))
        elif Path(item).exists():
            add(Path(item))
        elif Path(item).is_symlink():
            sources.append(Source(item, "error", _broken_link(Path(item))))
        else:
            sources.append(Source(item, "error", "no such file or folder"))
    return sources


def refuse_outputs_among_inputs(paths: OutputPaths, inputs: Iterable[str], sources: Sequence[Source]) -> None:
    """Stop before any work when an output would overwrite an input or be read back as one: a path the
    run writes (or deletes, with overwrite=true) that is an input file, lies in an input folder or matches
    an input pattern."""
    outputs = [Path(p).resolve() for p in paths.all]
    if paths.folder and not is_uri(paths.folder):
        outputs.append(Path(paths.folder).resolve())
    files = {Path(s.path).resolve(): s.path for s in sources if s.kind != "error" and not is_uri(s.path)}
    for item in inputs:
        if is_uri(item):
            continue
        given = Path(os.path.expanduser(str(item)))
        for out in outputs:
            if out in files or (out.is_dir() and any(out in f.parents for f in files)):
                clash = f"is the input file {files.get(out, item)}"
            elif given.is_dir() and (out == given.resolve() or given.resolve() in out.parents):
                clash = f"lies inside the input folder {item}"
            elif GLOB_CHARS.intersection(str(given)) and fnmatch.fnmatch(str(out), str(given.absolute())):
                clash = f"matches the input pattern {item}"
            else:
                continue
            raise LabellingError(f"output {out} {clash}: choose an output outside the inputs")


def input_facts(path: str) -> list:
    """[path, size, mtime]: what tells a resumed run that an input changed."""
    try:
        if is_uri(path):
            import pyarrow.fs as pafs

            fs, inner = pafs.FileSystem.from_uri(path)
            info = fs.get_file_info(inner)
            return [path, info.size, info.mtime_ns]
        stat = Path(path).stat()
        return [str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns]
    except (OSError, ValueError):
        return [path, None, None]


# ---------------------------------------------------------------------------- reading


def open_input(path: str):
    """A binary, seekable, line-iterable handle on a local path or a pyarrow filesystem URI."""
    if is_uri(path):
        import pyarrow.fs as pafs

        fs, inner = pafs.FileSystem.from_uri(path)
        return io.BufferedReader(fs.open_input_file(inner))
    return open(path, "rb")  # the caller closes it


def _decode_error(data: bytes, error: UnicodeDecodeError, where: str) -> str:
    return f"not UTF-8 text: byte 0x{data[error.start]:02x} at {where} ({error.reason})"


def _read_txt(path: str) -> Item:
    try:
        with open_input(path) as handle:
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
        handle = open_input(path)
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
