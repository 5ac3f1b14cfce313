"""Inference over a saved model folder, transformer or tfidf, behind one interface.

`load_predictor(model_dir)` checks the folder before any work starts and returns an
object with `labels`, `normalization` and `predict_proba(texts) -> (n, targets,
polarities)`. The transformer path sorts sentences by length, pads each batch only to
its own longest sentence, and runs under `torch.inference_mode`; `precision` picks
fp32 (exactly the stock model's arithmetic), bf16, or int8 dynamic quantisation.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from diplostance.baseline import TFIDF_CONFIG, TFIDF_FILE, VOCABULARY_FILE, TfidfStanceModel
from diplostance.errors import UserError
from diplostance.modeling import encode_texts
from diplostance.schema import LabelSpace
from diplostance.text import TEXT_PROCESSING_FILE, TextNormalization, normalize

PRECISIONS = ("fp32", "bf16", "int8")


class ModelFolderError(UserError, ValueError):
    """A model_dir that is not a usable diplostance model folder."""


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")


def check_model_folder(model_dir: str | Path) -> tuple[str, LabelSpace]:
    """Kind ('transformer' or 'tfidf') and label space of a saved model folder.

    Checked before any work starts: raises ModelFolderError naming the folder and the
    missing or unreadable file.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFolderError(f"{model_dir}: not a folder (model_dir must be a saved model folder, e.g. RUN/model)")
    if not (model_dir / TEXT_PROCESSING_FILE).is_file():
        raise ModelFolderError(
            f"{model_dir}: {TEXT_PROCESSING_FILE} is missing: the folder was not saved by diplostance"
        )
    try:
        TextNormalization.load(model_dir)
    except (OSError, ValueError) as error:  # unreadable or malformed JSON, unknown normalisation option
        raise ModelFolderError(f"{model_dir}: {error}") from error
    if (model_dir / TFIDF_CONFIG).is_file():
        kind, config_path = "tfidf", model_dir / TFIDF_CONFIG
        required = {"weights": (TFIDF_FILE,), "vocabulary": (VOCABULARY_FILE,)}
    elif (model_dir / "config.json").is_file():
        kind, config_path = "transformer", model_dir / "config.json"
        required = {"weights": WEIGHT_FILES, "tokenizer": TOKENIZER_FILES}
    else:
        raise ModelFolderError(f"{model_dir}: neither config.json (transformer) nor {TFIDF_CONFIG} (tfidf) is present")
    for what, names in required.items():
        if not any((model_dir / name).is_file() for name in names):
            raise ModelFolderError(f"{model_dir}: no {what} file ({' / '.join(names)}): the model folder is incomplete")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if kind == "tfidf":
            labels = LabelSpace(tuple(config["targets"]), tuple(config["polarities"]))
        else:
            labels = LabelSpace.from_id2label(config["id2label"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelFolderError(f"{config_path}: the targets cannot be read: {error!r}") from error
    return kind, labels


class TfidfPredictor:
    def __init__(self, model_dir: Path):
        self.model = TfidfStanceModel.load(model_dir)
        self.labels = self.model.labels
        self.normalization = TextNormalization.load(model_dir)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.model.predict_proba([normalize(t, self.normalization) for t in texts])


class TransformerPredictor:
    def __init__(
        self,
        model_dir: Path,
        precision: str = "fp32",
        batch_size: int = 16,
        max_length: int = 128,
        num_threads: int | None = None,
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        if num_threads:
            torch.set_num_threads(num_threads)
        self.normalization = TextNormalization.load(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.labels = LabelSpace.from_id2label(model.config.id2label)
        if precision == "bf16":
            model = model.to(torch.bfloat16)
        elif precision == "int8":
            with warnings.catch_warnings():  # torch.ao's deprecation notice; the API still works
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model, self.precision = model, precision
        self.batch_size, self.max_length = batch_size, max_length

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return encode_texts(self.tokenizer, texts, self.normalization, self.max_length)["input_ids"]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        n_targets, n_pol = len(self.labels.targets), len(self.labels.polarities)
        out = np.empty((len(texts), n_targets, n_pol), dtype=np.float32)
        if not texts:
            return out
        ids = self.encode(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                inputs = self.tokenizer.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
                logits = self.model(**inputs).logits.float()
                out[batch] = torch.softmax(logits.view(len(batch), n_targets, n_pol), dim=-1).numpy()
        return out


def load_predictor(model_dir: str | Path, **options) -> TfidfPredictor | TransformerPredictor:
    model_dir = Path(model_dir)
    if check_model_folder(model_dir)[0] == "tfidf":
        return TfidfPredictor(model_dir)
    return TransformerPredictor(model_dir, **options)
