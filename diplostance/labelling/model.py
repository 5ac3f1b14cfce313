"""The model side both engines share: the predictor a run loads, and the fingerprint a resumed run
must match (model files, arithmetic, inputs)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from diplostance.devices import check_inference_precision, default_batch_size, load_aware_threads, resolve_device
from diplostance.embedding import quiet_progress
from diplostance.labelling.inputs import Source, input_facts
from diplostance.labelling.options import LabelOptions
from diplostance.predictors import ModelFolderError, check_options, load_predictor


def check_arithmetic(options: LabelOptions, kind: str, device: str | None = None) -> None:
    """Refuse before any work a backend, device or precision the machine or the model (each member of an
    ensemble) cannot give, as evaluate.py does (a one-line error); a tfidf model ignores them."""
    precision, where = options.precision, device or options.device
    check_options(options.model_dir, options.backend, precision=precision, device=where)


def load_labelling_predictor(options: LabelOptions, kind: str, device: str | None = None):
    """The predictor for `options` on `device` (default options.device); tfidf takes no arithmetic options.
    `num_threads` null is train.py's load-aware count; one line on stderr names what each member runs on;
    the encoders' own progress bars stay off (the run's bar counts the sentences)."""
    quiet_progress()
    threads = options.num_threads or load_aware_threads()
    predictor_options = {}
    if kind != "tfidf" and options.backend != "torch":  # transformers, and ensembles for their members
        predictor_options = {
            "backend": options.backend,
            "precision": options.precision,
            "batch_size": options.batch_size or default_batch_size(resolve_device("cpu")),
            "max_length": options.max_length,
            "num_threads": threads,
            "device": device or options.device,
        }
    elif kind != "tfidf":
        where = resolve_device(device or options.device)
        check_inference_precision(options.precision, where)
        predictor_options = {
            "backend": options.backend,
            "precision": options.precision,
            "batch_size": options.batch_size or default_batch_size(where),
            "max_length": options.max_length,
            "num_threads": threads,
            "device": str(where),
        }
    try:
        return load_predictor(options.model_dir, announce=True, **predictor_options)
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"{options.model_dir}: the model cannot be loaded: {error}") from error


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:16]


def run_fingerprint(options: LabelOptions, kind: str, sources: Sequence[Source]) -> dict:
    """The settings a resumed run must share with the interrupted one (not the format, threads, device or
    window: they do not change the records beyond rounding)."""
    model_files = sorted(p for p in options.model_dir.iterdir() if p.is_file())
    return {
        "model": _digest([input_facts(str(p)) for p in model_files]),
        "precision": options.precision if kind != "tfidf" else None,
        "backend": options.backend if kind != "tfidf" else None,
        "max_length": options.max_length if kind != "tfidf" else None,
        "jsonl_fields": [options.jsonl_id_field, options.jsonl_text_field],
        "inputs": _digest([[s.kind, s.problem, *input_facts(s.path)] for s in sources]),
    }
