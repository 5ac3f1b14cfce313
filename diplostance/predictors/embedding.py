"""The embedding kind: a frozen sentence encoder + one logistic regression per target.

Folder: `embedding_config.json` (targets, polarities, the encoder's prefix, layers and
max_length, the regression options), `classifier.safetensors`, `encoder/` (a `save_pretrained`
encoder with its tokenizer) and `text_processing.json`. `precision` (fp32, bf16, or int8 on the
CPU), `device`, `batch_size` and `num_threads` apply to the encoder; the regressions run on numpy.

Features are memoised per process (`diplostance.embedding.memoised_features`): training evaluates
the same dev and test sentences several times (the member, then the ensemble) and pays for the
encoder once; the sentences it encoded to fit the regressions are not encoded again.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from diplostance.devices import check_inference_precision, default_batch_size, resolve_device
from diplostance.embedding import (
    CLASSIFIER_FILE,
    EMBEDDING_CONFIG,
    ENCODER_SUBDIR,
    EmbeddingStanceModel,
    SentenceEncoder,
    memo_key,
    memoised_features,
)
from diplostance.errors import UserError
from diplostance.predictors.folder import (
    ModelFolderError,
    check_config_matches_weights,
    check_text_processing,
    read_json,
    read_safetensors_header,
    require_files,
    tokenizer_facts,
)
from diplostance.schema import LabelSpace
from diplostance.text import TextNormalization, normalize

CONFIG_FILE = EMBEDDING_CONFIG
PRECISIONS = ("fp32", "bf16", "int8")


def check_folder(model_dir: Path, config: dict) -> LabelSpace:
    check_text_processing(model_dir)
    require_files(model_dir, {"classifier weights": (CLASSIFIER_FILE,)})
    encoder = model_dir / ENCODER_SUBDIR
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        if not (encoder / name).is_file():
            raise ModelFolderError(f"{encoder}: no {name}: the encoder folder is incomplete")
    try:
        labels = LabelSpace(tuple(config["targets"]), tuple(config["polarities"]))
        layers = [int(x) for x in config["encoder"]["layers"]]
        str(config["encoder"]["prefix"])
        int(config["encoder"]["max_length"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelFolderError(f"{model_dir / CONFIG_FILE}: cannot be read: {error!r}") from error
    if not layers:
        raise ModelFolderError(f"{model_dir / CONFIG_FILE}: encoder.layers is empty")
    encoder_config = read_json(encoder / "config.json")
    if not isinstance(encoder_config, dict):
        raise ModelFolderError(f"{encoder / 'config.json'}: holds no JSON object")
    weights = read_safetensors_header(encoder / "model.safetensors")
    check_config_matches_weights(encoder / "config.json", encoder_config, weights, encoder / "model.safetensors")
    hidden = encoder_config.get("hidden_size")
    header = read_safetensors_header(model_dir / CLASSIFIER_FILE)
    for target in labels.targets:
        shape = header.get(f"{target}.coef", {}).get("shape") or [0]
        if f"{target}.coef" in header and isinstance(hidden, int) and shape[-1] != hidden * len(layers):
            raise ModelFolderError(
                f"{model_dir / CLASSIFIER_FILE}: {target}'s regression reads {shape[-1]} features, but the encoder "
                f"gives {len(layers)} layer(s) x {hidden} (encoder/config.json, embedding_config.json's "
                "encoder.layers): the classifier does not belong to this encoder"
            )
        if f"{target}.coef" in header and shape[-1] % len(layers):
            raise ModelFolderError(f"{model_dir / CLASSIFIER_FILE}: {target}'s weights do not match encoder.layers")
    return labels


def check_options(precision: str = "fp32", device: str | torch.device = "auto", **options) -> None:
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {list(PRECISIONS)} for an embedding model, got {precision!r}")
    check_inference_precision(precision, resolve_device(str(device)))


class EmbeddingPredictor:
    def __init__(
        self,
        model_dir: Path,
        precision: str = "fp32",
        batch_size: int | None = None,
        max_length: int | None = None,
        num_threads: int | None = None,
        device: str | torch.device = "auto",
    ):
        check_options(precision, device)
        self.device = resolve_device(str(device))
        if num_threads:
            torch.set_num_threads(num_threads)
        self.normalization = TextNormalization.load(model_dir)
        self.model, encoder_options = EmbeddingStanceModel.load(model_dir)
        self.labels = self.model.labels
        encoder_dir = model_dir / ENCODER_SUBDIR
        self.encoder = SentenceEncoder.load(
            encoder_dir,
            prefix=encoder_options["prefix"],
            layers=encoder_options["layers"],
            max_length=int(max_length or encoder_options["max_length"]),
            batch_size=batch_size or default_batch_size(self.device),
        )
        model = self.encoder.model
        if precision == "bf16":
            model = model.to(torch.bfloat16)
        elif precision == "int8":
            with warnings.catch_warnings():  # torch.ao's deprecation notice; the API still works
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.encoder.model = model.to(self.device)
        self.precision = precision
        self._key = memo_key(encoder_dir, precision, self.encoder)

    def features(self, texts: Sequence[str]) -> np.ndarray:
        normalised = [normalize(t, self.normalization) for t in texts]
        return memoised_features(self._key, normalised, self.encoder)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.predict_proba(self.features(texts)).astype(np.float32)

    def token_facts(self, texts: Sequence[str]) -> np.ndarray:
        """Per text: word pieces the encoder reads (after its prefix), of them unknown, cut at max_length."""
        prefixed = [self.encoder.prefix + normalize(t, self.normalization) for t in texts]
        return tokenizer_facts(self.encoder.tokenizer, prefixed, self.encoder.max_length)


def load(model_dir: Path, config: dict, **options) -> EmbeddingPredictor:
    return EmbeddingPredictor(model_dir, **options)
