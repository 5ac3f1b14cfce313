"""The tfidf kind: word and character n-gram tf-idf with one logistic regression per target.

Folder: `tfidf_config.json` (targets, polarities, options), `tfidf.safetensors` (weights),
`vocabulary.json`, `text_processing.json`. Runs on numpy: the backend and the arithmetic
options (precision, device, batch size) do not apply and are ignored.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diplostance.baseline import TFIDF_CONFIG, TFIDF_FILE, VOCABULARY_FILE, TfidfStanceModel
from diplostance.predictors.folder import (
    ModelFolderError,
    check_text_processing,
    read_json,
    read_safetensors_header,
    require_files,
)
from diplostance.schema import LabelSpace
from diplostance.text import TextNormalization, normalize

CONFIG_FILE = TFIDF_CONFIG


def check_folder(model_dir: Path, config: dict) -> LabelSpace:
    check_text_processing(model_dir)
    require_files(model_dir, {"weights": (TFIDF_FILE,), "vocabulary": (VOCABULARY_FILE,)})
    try:
        labels = LabelSpace(tuple(config["targets"]), tuple(config["polarities"]))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelFolderError(f"{model_dir / CONFIG_FILE}: the targets cannot be read: {error!r}") from error
    read_safetensors_header(model_dir / TFIDF_FILE)
    read_json(model_dir / VOCABULARY_FILE)
    return labels


class TfidfPredictor:
    def __init__(self, model_dir: Path):
        self.model = TfidfStanceModel.load(model_dir)
        self.labels = self.model.labels
        self.normalization = TextNormalization.load(model_dir)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.predict_proba([normalize(t, self.normalization) for t in texts])


def check_options(backend: str = "torch", **options) -> None:
    """Nothing to refuse: the tfidf model ignores the backend and the arithmetic options."""


def load(model_dir: Path, config: dict, **options) -> TfidfPredictor:
    return TfidfPredictor(model_dir)
