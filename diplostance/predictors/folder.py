"""What every model folder check shares: the error, JSON and safetensors readers, paths kept inside.

Nothing here knows a model kind; the kind modules (tfidf, transformer, ensemble, ...) build on it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from diplostance.errors import UserError
from diplostance.text import TEXT_PROCESSING_FILE, TextNormalization

MAX_SAFETENSORS_HEADER = 100_000_000


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
