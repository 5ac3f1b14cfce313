"""What every model folder check shares: the error, JSON and safetensors readers, paths kept inside.

Nothing here knows a model kind; the kind modules (tfidf, transformer, ensemble, ...) build on it.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from diplostance.errors import UserError
from diplostance.text import TEXT_PROCESSING_FILE, TextNormalization, normalize

MAX_SAFETENSORS_HEADER = 100_000_000
# Transformer blocks in tensor names: BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa (`encoder.layer.N.`) and
# decoder models (`layers.N.`); other layouts are not counted.
LAYER_INDEX = re.compile(r"(?:^|\.)(?:encoder\.layer|layers)\.(\d+)\.")


class ModelFolderError(UserError, ValueError):
    """A model_dir that is not a usable diplostance model folder (exit status 2: the run cannot start)."""


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def read_json(path: Path, strict_numbers: bool = False):
    """The JSON in `path`; a missing or malformed file is a ModelFolderError naming it.

    `strict_numbers` refuses NaN and Infinity, which Python's json module accepts by default.
    """
    try:
        text = path.read_text(encoding="utf-8")
        if strict_numbers:
            return json.loads(text, parse_constant=_refuse_constant)
        return json.loads(text)
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"{path}: cannot be read as JSON ({error})") from error


def finite_number(value, what: str) -> float:
    """`value` as a float when it is a finite number (not a bool, a string, NaN or Infinity)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r}")
    return float(value)


def inside(model_dir: Path, name: str, what: str) -> Path:
    """`model_dir / name` when it stays inside the folder (symlinks followed); a folder only reads itself.

    An absolute path, a `..` that climbs out, or a link to a file elsewhere is a ModelFolderError.
    """
    if not isinstance(name, str) or not name or Path(name).is_absolute():
        raise ModelFolderError(f"{model_dir}: {what} {name!r} is not a path inside the model folder")
    path = model_dir / name
    root = model_dir.resolve()
    if root not in path.resolve().parents:
        raise ModelFolderError(
            f"{model_dir}: {what} {name!r} leaves the model folder; a model folder only reads itself"
        )
    return path


def check_text_processing(model_dir: Path) -> TextNormalization:
    """The folder's `text_processing.json` (how its text is normalised), which every trained folder has."""
    if not (model_dir / TEXT_PROCESSING_FILE).is_file():
        raise ModelFolderError(
            f"{model_dir}: {TEXT_PROCESSING_FILE} is missing: the folder was not saved by diplostance"
        )
    try:
        return TextNormalization.load(model_dir)
    except (OSError, ValueError, TypeError, AttributeError) as error:  # unreadable or malformed JSON, unknown option
        raise ModelFolderError(f"{model_dir}: {error}") from error


def require_files(model_dir: Path, required: dict[str, tuple[str, ...]]) -> None:
    """Each entry (what -> file names) has at least one of its files in the folder."""
    for what, names in required.items():
        if not any((model_dir / name).is_file() for name in names):
            raise ModelFolderError(f"{model_dir}: no {what} file ({' / '.join(names)}): the model folder is incomplete")


def read_safetensors_header(path: Path) -> dict:
    """The tensor table of a safetensors file, read without loading a weight.

    Proves the file is whole: the 8-byte header length, a JSON header, and a file size that
    matches the last tensor's end (a truncated or padded file fails).
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            length = int.from_bytes(prefix, "little") if len(prefix) == 8 else -1
            if not 0 < length <= min(size - 8, MAX_SAFETENSORS_HEADER):
                raise ModelFolderError(f"{path}: not a safetensors file, or truncated ({size} bytes)")
            header = json.loads(f.read(length))
        ends = [entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"]
    except ModelFolderError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise ModelFolderError(f"{path}: the safetensors header cannot be read ({error})") from error
    if 8 + length + max(ends, default=0) != size:
        raise ModelFolderError(
            f"{path}: {size} bytes, but its header describes {8 + length + max(ends, default=0)}: "
            "the file is truncated or corrupted (save the model again)"
        )
    return {name: entry for name, entry in header.items() if name != "__metadata__"}


def check_config_matches_weights(config_file: Path, config: dict, tensors: dict, weights_file: Path) -> None:
    """`config.json`'s shape against the weights' (from safetensors headers, no weight loaded): the number
    of layers, and the vocabulary size and width of the word embeddings. transformers would load a config
    edited to fewer layers silently (the rest unused) and fail later, or give other numbers, on another width."""
    where = f"{config_file}: {{}}, but {weights_file.name} {{}}: the config does not belong to these weights"
    layers = config.get("num_hidden_layers")
    found = {int(m.group(1)) for name in tensors if (m := LAYER_INDEX.search(name))}
    if isinstance(layers, int) and found and layers != len(found):
        raise ModelFolderError(where.format(f"num_hidden_layers is {layers}", f"holds {len(found)} layers"))
    embeddings = [e.get("shape") for name, e in tensors.items() if name.endswith("word_embeddings.weight")]
    if len(embeddings) != 1 or not isinstance(embeddings[0], list) or len(embeddings[0]) != 2:
        return
    rows, width = embeddings[0]
    vocab_size = config.get("vocab_size")
    if isinstance(vocab_size, int) and vocab_size != rows:
        raise ModelFolderError(where.format(f"vocab_size is {vocab_size}", f"has {rows} word embeddings"))
    key = "embedding_size" if isinstance(config.get("embedding_size"), int) else "hidden_size"  # ALBERT, ELECTRA
    if isinstance(config.get(key), int) and config[key] != width:
        raise ModelFolderError(where.format(f"{key} is {config[key]}", f"has word embeddings {width} wide"))
    hidden = config.get("hidden_size")
    norms = [e.get("shape") for name, e in tensors.items() if name.endswith("attention.output.LayerNorm.weight")]
    if isinstance(hidden, int) and norms and norms[0] != [hidden]:
        raise ModelFolderError(where.format(f"hidden_size is {hidden}", f"has layers {norms[0]} wide"))


def tokenizer_facts(tokenizer, texts: list[str], max_length: int):
    """Per text (normalised, prefixed as the model reads it): [word pieces the model reads, how many of
    them are the unknown piece, 1 when the tokenizer cuts the text at max_length tokens], an int array
    (n, 3). One tokenizer call; a fast tokenizer tells a cut from the pieces it leaves over."""
    import numpy as np

    out = np.zeros((len(texts), 3), dtype=np.int64)
    if not texts:
        return out
    unk = tokenizer.unk_token_id
    batch = tokenizer(list(texts), truncation=True, max_length=max_length)
    if batch.encodings is None:  # a slow tokenizer: lengths without truncation
        full = tokenizer(list(texts))["input_ids"]
        for i, (ids, whole) in enumerate(zip(batch["input_ids"], full, strict=True)):
            special = tokenizer.get_special_tokens_mask(ids, already_has_special_tokens=True)
            out[i] = [len(ids) - sum(special), sum(t == unk for t in ids), len(whole) > len(ids)]
        return out
    for i, encoding in enumerate(batch.encodings):
        ids, special = encoding.ids, encoding.special_tokens_mask
        unknown = sum(1 for t, s in zip(ids, special, strict=True) if t == unk and not s) if unk is not None else 0
        out[i] = [len(ids) - sum(special), unknown, bool(encoding.overflowing)]
    return out


def predictor_token_facts(predictor, texts: list[str]):
    """`tokenizer_facts` of a loaded predictor for raw texts, or None for one that reads no word pieces
    (tf-idf): its own `token_facts`, else one from its tokenizer, normalization and max_length (ONNX)."""
    if hasattr(predictor, "token_facts"):
        return predictor.token_facts(texts)
    if all(hasattr(predictor, name) for name in ("tokenizer", "normalization", "max_length")):
        normalised = [normalize(t, predictor.normalization) for t in texts]
        return tokenizer_facts(predictor.tokenizer, normalised, predictor.max_length)
    return None
