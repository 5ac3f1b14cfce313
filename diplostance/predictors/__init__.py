"""Inference over a saved model folder, whatever its kind, behind one interface and one registry.

    load_predictor(model_dir, backend="torch", **options)   the folder's predictor, checked first
    check_model_folder(model_dir) -> (kind, LabelSpace)      the check alone, without loading a weight
    check_options(model_dir, backend="torch", **options)     refuse options the folder's model cannot run

A predictor has `labels` (a LabelSpace), `normalization` (a TextNormalization) and
`predict_proba(texts) -> float32 array (n, targets, polarities)`.

The registry
------------
`KINDS` maps a folder kind to the module that handles it. A folder's kind is the first entry
(in registry order) whose `CONFIG_FILE` is in the folder. A kind module exposes:

    CONFIG_FILE                             the JSON file that marks a folder of this kind; the
                                            registry reads it and passes it in as `config`
    check_folder(model_dir, config) -> LabelSpace
                                            every file the model needs is there, whole and
                                            consistent, without loading a weight; raise
                                            ModelFolderError (predictors.folder) naming the file.
                                            Read only files inside model_dir (folder.inside).
    check_options(**options) -> None        refuse a precision/device/... it cannot run (UserError);
                                            ignore the options that do not apply to it
    load(model_dir, config, **options)      the predictor (options: precision, batch_size,
                                            max_length, num_threads, device, cache_dir, ...)

and, for a kind made of other model folders (the ensemble):

    member_folders(model_dir, config) -> [Path]
                                            the registry checks and loads each member as a model
                                            folder with the same backend and options, compares its
                                            labels, and passes the loaded members as load(...,
                                            members=[...])

`BACKEND_MODULES` maps (kind, backend) to the module (same interface) that runs that kind on
another backend: the transformer kind and the embedding kind's encoder on ONNX Runtime. The kinds
of `BACKEND_FREE_KINDS` run as they always do (tfidf is numpy; an ensemble hands the backend to its
members); any other kind with no entry for the backend asked is refused, never run on torch instead.

Adding a kind: write `diplostance/predictors/<kind>.py` with the functions above and add one
line to `KINDS` (before "transformer", whose `config.json` is the most generic marker).
Kind modules import only `predictors.folder` and the library below it, never this package,
so every module of the package imports on its own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from diplostance.errors import UserError
from diplostance.predictors import embedding, ensemble, onnx, tfidf, transformer
from diplostance.predictors.folder import ModelFolderError, read_json, read_safetensors_header
from diplostance.predictors.onnx import ONNX_PRECISIONS
from diplostance.predictors.transformer import PRECISIONS
from diplostance.schema import LabelSpace
from diplostance.text import TEXT_PROCESSING_FILE

KINDS = {
    "ensemble": ensemble,
    "tfidf": tfidf,
    "embedding": embedding,
    "transformer": transformer,
}
BACKEND_MODULES = {("transformer", "onnx"): onnx, ("embedding", "onnx"): onnx.embedding_backend}
# Kinds without an encoder, which run the same whatever the backend (an ensemble hands it to its members).
# Any other kind without a module for the backend asked is refused, never run on torch in its place.
BACKEND_FREE_KINDS = ("tfidf", "ensemble")
BACKENDS = ("torch", "onnx")

__all__ = [
    "BACKENDS",
    "BACKEND_MODULES",
    "KINDS",
    "ONNX_PRECISIONS",
    "PRECISIONS",
    "ModelFolderError",
    "check_backend",
    "check_model_folder",
    "check_options",
    "folder_kind",
    "load_predictor",
    "read_safetensors_header",
]


def folder_kind(model_dir: str | Path) -> str:
    """The kind of a model folder: the first registered kind whose CONFIG_FILE it holds."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFolderError(f"{model_dir}: not a folder (model_dir must be a saved model folder, e.g. RUN/model)")
    for kind, module in KINDS.items():
        if (model_dir / module.CONFIG_FILE).is_file():
            return kind
    if (model_dir / "model").is_dir() and (model_dir / "metrics.json").is_file():  # a run folder, not its model
        ensemble = model_dir / "ensemble" / "model"
        raise ModelFolderError(
            f"{model_dir}: a training run's folder, not a model folder: did you mean {ensemble} (the run's headline "
            f"model, its ensemble) or {model_dir / 'model'} (its main model alone)?"
            if ensemble.is_dir()
            else f"{model_dir}: a training run's folder, not a model folder: did you mean {model_dir / 'model'}?"
        )
    if not (model_dir / TEXT_PROCESSING_FILE).is_file():
        raise ModelFolderError(
            f"{model_dir}: {TEXT_PROCESSING_FILE} is missing: the folder was not saved by diplostance"
        )
    markers = " / ".join(f"{module.CONFIG_FILE} ({kind})" for kind, module in KINDS.items())
    raise ModelFolderError(f"{model_dir}: not a model folder of a known kind: none of {markers} is present")


def _module(kind: str, backend: str = "torch"):
    if kind not in KINDS:
        raise ModelFolderError(f"unknown model kind {kind!r}; known kinds: {list(KINDS)}")
    if backend != "torch" and kind not in BACKEND_FREE_KINDS and (kind, backend) not in BACKEND_MODULES:
        raise UserError(f"the {kind} kind has no backend={backend}; use backend=torch")
    return BACKEND_MODULES.get((kind, backend), KINDS[kind])


def _check(model_dir: Path, members: bool) -> tuple[str, LabelSpace, dict]:
    kind = folder_kind(model_dir)
    config = read_json(model_dir / KINDS[kind].CONFIG_FILE)
    if not isinstance(config, dict):
        raise ModelFolderError(f"{model_dir / KINDS[kind].CONFIG_FILE}: holds no JSON object")
    labels = KINDS[kind].check_folder(model_dir, config)
    if members and hasattr(KINDS[kind], "member_folders"):
        for member in KINDS[kind].member_folders(model_dir, config):
            _check_member_labels(member, check_model_folder(member)[1], labels)
    return kind, labels, config


def _check_member_labels(member_dir: Path, member_labels: LabelSpace, labels: LabelSpace) -> None:
    if member_labels != labels:
        raise ModelFolderError(
            f"{member_dir}: its labels {member_labels.id2label} differ from the folder's {labels.id2label}"
        )


def check_model_folder(model_dir: str | Path) -> tuple[str, LabelSpace]:
    """Kind (a key of KINDS) and label space of a saved model folder.

    Checked before any work starts, without loading a weight: every file the model needs is
    there and readable, and the files agree (e.g. config.json's labels with the output layer's
    size, the tokenizer's vocabulary with the embeddings); a composite folder's members are
    checked in their turn. Raises ModelFolderError naming the folder and the missing,
    unreadable or inconsistent file.
    """
    kind, labels, _ = _check(Path(model_dir), members=True)
    return kind, labels


def check_backend(backend: str, precision: str = "fp32") -> None:
    """Refuse an unknown backend, or a precision the ONNX backend does not run, before any work."""
    if backend not in BACKENDS:
        raise UserError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "onnx" and precision not in ONNX_PRECISIONS:
        raise UserError(f"precision={precision} is not available with backend=onnx; use one of {list(ONNX_PRECISIONS)}")


def check_options(model_dir: str | Path, backend: str = "torch", **options) -> None:
    """Refuse, before any work, a backend, precision or device the folder's model (every member of a
    composite folder) cannot run on this machine."""
    check_backend(backend, options.get("precision") or "fp32")
    model_dir = Path(model_dir)
    kind, _, config = _check(model_dir, members=False)
    options = {k: v for k, v in options.items() if v is not None}
    _module(kind, backend).check_options(**options)
    for member in getattr(KINDS[kind], "member_folders", lambda *_: [])(model_dir, config):
        check_options(member, backend, **options)


def load_predictor(model_dir: str | Path, backend: str = "torch", announce: bool = False, **options):
    """The folder's predictor. `backend=onnx` runs a transformer, or an embedding model's encoder, through
    ONNX Runtime (diplostance.predictors.onnx), exporting it on first use; a tfidf folder ignores the
    backend and the arithmetic options; an ensemble passes them to its members. With `precision=int8` on
    ONNX Runtime the model's sentences close to a decision boundary run again in fp32 (onnx.CascadePredictor).
    `announce` prints one line on stderr naming what each member runs on. Options that are None take the
    predictor's default."""
    predictor = _load(model_dir, backend, **options)
    if onnx.approximate_members(predictor):
        predictor = onnx.with_cascade(predictor, Path(model_dir))
    if announce:
        precision = options.get("precision") or "fp32"
        print(
            onnx.backend_line(predictor, Path(model_dir), backend, precision, options.get("num_threads")),
            file=sys.stderr,
        )
    return predictor


def _load(model_dir: str | Path, backend: str = "torch", **options):
    check_backend(backend, options.get("precision") or "fp32")
    model_dir = Path(model_dir)
    options = {k: v for k, v in options.items() if v is not None}
    kind, _, config = _check(model_dir, members=False)
    module = _module(kind, backend)
    if hasattr(KINDS[kind], "member_folders"):  # each member is checked as it is loaded
        members = [_load(m, backend, **options) for m in KINDS[kind].member_folders(model_dir, config)]
        return module.load(model_dir, config, members=members, **options)
    return module.load(model_dir, config, **options)
