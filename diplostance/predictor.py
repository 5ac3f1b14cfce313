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
from diplostance.ensemble import ENSEMBLE_CONFIG, read_ensemble_config
from diplostance.errors import UserError
from diplostance.modeling import encode_texts
from diplostance.schema import LabelSpace
from diplostance.text import TEXT_PROCESSING_FILE, TextNormalization, normalize

PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # fp16 on a GPU only, int8 on the CPU only
BACKENDS = ("torch", "onnx")
ONNX_PRECISIONS = ("fp32", "int8")


class ModelFolderError(UserError, ValueError):
    """A model_dir that is not a usable diplostance model folder."""


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
TOKENIZER_CONFIG = "tokenizer_config.json"
# A tokenizer needs its vocabulary: the fast tokenizer file, or the slow tokenizer's vocabulary file.
VOCABULARY_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "sentencepiece.bpe.model",
    "spiece.model",
    "tokenizer.model",
)
TOKENIZER_FILES = (TOKENIZER_CONFIG, *VOCABULARY_FILES)
# Output layers whose first dimension is the number of labels (BERT, RoBERTa/XLM-R, decoder heads).
HEAD_SUFFIXES = ("classifier.weight", "classifier.out_proj.weight", "score.weight")
MAX_SAFETENSORS_HEADER = 100_000_000


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
    except (OSError, ValueError, KeyError, TypeError, IndexError) as error:
        raise ModelFolderError(f"{path}: the safetensors header cannot be read ({error})") from error
    if 8 + length + max(ends, default=0) != size:
        raise ModelFolderError(
            f"{path}: {size} bytes, but its header describes {8 + length + max(ends, default=0)}: "
            "the file is truncated or corrupted (save the model again)"
        )
    return {name: entry for name, entry in header.items() if name != "__metadata__"}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelFolderError(f"{path}: cannot be read as JSON ({error})") from error


def _check_transformer_weights(model_dir: Path, labels: LabelSpace) -> None:
    if (model_dir / "model.safetensors").is_file():
        shards = [model_dir / "model.safetensors"]
    elif (model_dir / "model.safetensors.index.json").is_file():
        index = _read_json(model_dir / "model.safetensors.index.json")
        names = sorted(set((index.get("weight_map") or {}).values())) if isinstance(index, dict) else []
        if not names:
            raise ModelFolderError(f"{model_dir / 'model.safetensors.index.json'}: names no weight files")
        shards = [model_dir / name for name in names]
        missing = [shard.name for shard in shards if not shard.is_file()]
        if missing:
            raise ModelFolderError(f"{model_dir}: weight file(s) {missing} named by the index are missing")
    else:
        return  # pytorch_model.bin: a pickle, not readable without loading it
    for shard in shards:
        for name, entry in read_safetensors_header(shard).items():
            if name.endswith(HEAD_SUFFIXES) and entry.get("shape") and entry["shape"][0] != labels.num_labels:
                raise ModelFolderError(
                    f"{shard}: the output layer {name} has {entry['shape'][0]} outputs, but config.json's id2label "
                    f"names {labels.num_labels} labels: weights and config do not belong together"
                )


def _tokenizer_vocabulary_size(model_dir: Path) -> int | None:
    if not (model_dir / "tokenizer.json").is_file():
        return None
    tokenizer = _read_json(model_dir / "tokenizer.json")
    vocab = tokenizer.get("model", {}).get("vocab") if isinstance(tokenizer, dict) else None
    if not vocab:
        raise ModelFolderError(f"{model_dir / 'tokenizer.json'}: holds no vocabulary")
    added = [t.get("id", -1) for t in tokenizer.get("added_tokens") or [] if isinstance(t, dict)]
    return max(len(vocab), max(added, default=-1) + 1)


def _check_transformer_folder(model_dir: Path, config: dict, labels: LabelSpace) -> None:
    label2id = config.get("label2id")
    if label2id and {int(v): k for k, v in label2id.items()} != labels.id2label:
        raise ModelFolderError(f"{model_dir / 'config.json'}: label2id does not mirror id2label")
    if config.get("num_labels") not in (None, labels.num_labels):
        raise ModelFolderError(
            f"{model_dir / 'config.json'}: num_labels {config['num_labels']} but id2label names {labels.num_labels}"
        )
    _check_transformer_weights(model_dir, labels)
    if not (model_dir / TOKENIZER_CONFIG).is_file():
        raise ModelFolderError(f"{model_dir}: no {TOKENIZER_CONFIG}: the model folder is incomplete")
    if not any((model_dir / name).is_file() for name in VOCABULARY_FILES):
        raise ModelFolderError(
            f"{model_dir}: no tokenizer vocabulary ({' / '.join(VOCABULARY_FILES)}): the model folder is incomplete"
        )
    vocab_size, model_vocab = _tokenizer_vocabulary_size(model_dir), config.get("vocab_size")
    if vocab_size and isinstance(model_vocab, int) and vocab_size > model_vocab:
        raise ModelFolderError(
            f"{model_dir}: tokenizer.json has {vocab_size} tokens but config.json's vocab_size is {model_vocab}: "
            "the tokenizer does not belong to these weights"
        )


def check_model_folder(model_dir: str | Path) -> tuple[str, LabelSpace]:
    """Kind ('transformer' or 'tfidf') and label space of a saved model folder.

    Checked before any work starts, without loading a weight: every file the model needs
    is there and readable (weights with a whole safetensors header, tokenizer files,
    `text_processing.json`), and the files agree (config.json's labels with the output
    layer's size, the tokenizer's vocabulary with the embeddings). Raises ModelFolderError
    naming the folder and the missing, unreadable or inconsistent file.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelFolderError(f"{model_dir}: not a folder (model_dir must be a saved model folder, e.g. RUN/model)")
    if (model_dir / ENSEMBLE_CONFIG).is_file():  # members are checked as model folders in their turn
        return "ensemble", read_ensemble_config(model_dir)[1]
    if not (model_dir / TEXT_PROCESSING_FILE).is_file():
        raise ModelFolderError(
            f"{model_dir}: {TEXT_PROCESSING_FILE} is missing: the folder was not saved by diplostance"
        )
    try:
        TextNormalization.load(model_dir)
    except (OSError, ValueError, TypeError, AttributeError) as error:  # unreadable or malformed JSON, unknown option
        raise ModelFolderError(f"{model_dir}: {error}") from error
    if (model_dir / TFIDF_CONFIG).is_file():
        kind, config_path = "tfidf", model_dir / TFIDF_CONFIG
        required = {"weights": (TFIDF_FILE,), "vocabulary": (VOCABULARY_FILE,)}
    elif (model_dir / "config.json").is_file():
        kind, config_path = "transformer", model_dir / "config.json"
        required = {"weights": WEIGHT_FILES}
    else:
        raise ModelFolderError(f"{model_dir}: neither config.json (transformer) nor {TFIDF_CONFIG} (tfidf) is present")
    for what, names in required.items():
        if not any((model_dir / name).is_file() for name in names):
            raise ModelFolderError(f"{model_dir}: no {what} file ({' / '.join(names)}): the model folder is incomplete")
    config = _read_json(config_path)
    try:
        if kind == "tfidf":
            labels = LabelSpace(tuple(config["targets"]), tuple(config["polarities"]))
        else:
            labels = LabelSpace.from_id2label(config["id2label"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelFolderError(f"{config_path}: the targets cannot be read: {error!r}") from error
    if kind == "tfidf":
        read_safetensors_header(model_dir / TFIDF_FILE)
        _read_json(model_dir / VOCABULARY_FILE)
    else:
        _check_transformer_folder(model_dir, config, labels)
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
        batch_size: int | None = None,  # None: 16 on the CPU, 128 on a GPU (diplostance.devices)
        max_length: int = 128,
        num_threads: int | None = None,
        device: str | torch.device = "auto",
    ):
        from diplostance.devices import check_inference_precision, default_batch_size, resolve_device

        if precision not in PRECISIONS:
            raise UserError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        self.device = resolve_device(str(device))
        check_inference_precision(precision, self.device)
        if num_threads:
            torch.set_num_threads(num_threads)
        self.normalization = TextNormalization.load(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.labels = LabelSpace.from_id2label(model.config.id2label)
        if precision in ("bf16", "fp16"):  # half weights: on a GPU the tensor cores, on the CPU bf16 kernels
            model = model.to(torch.bfloat16 if precision == "bf16" else torch.float16)
        elif precision == "int8":
            with warnings.catch_warnings():  # torch.ao's deprecation notice; the API still works
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model, self.precision = model.to(self.device), precision
        self.batch_size, self.max_length = batch_size or default_batch_size(self.device), max_length

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
                logits = self.model(**inputs.to(self.device)).logits.float()
                out[batch] = torch.softmax(logits.view(len(batch), n_targets, n_pol), dim=-1).cpu().numpy()
        return out


def check_backend(backend: str, precision: str = "fp32") -> None:
    """Refuse an unknown backend, or a precision the ONNX backend does not run, before any work."""
    if backend not in BACKENDS:
        raise UserError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    if backend == "onnx" and precision not in ONNX_PRECISIONS:
        raise UserError(f"precision={precision} is not available with backend=onnx; use one of {list(ONNX_PRECISIONS)}")


def load_predictor(model_dir: str | Path, backend: str = "torch", **options):
    """The folder's predictor; `backend=onnx` runs a transformer through ONNX Runtime (diplostance.onnx_backend),
    exporting it on first use. A tfidf folder ignores the backend and the arithmetic options."""
    check_backend(backend, options.get("precision", "fp32"))
    model_dir = Path(model_dir)
    options = {k: v for k, v in options.items() if v is not None}  # None (e.g. batch_size): the predictor's default
    kind = check_model_folder(model_dir)[0]
    if kind == "ensemble":
        from diplostance.ensemble import EnsemblePredictor

        return EnsemblePredictor(model_dir, backend=backend, **options)
    if kind == "tfidf":
        return TfidfPredictor(model_dir)
    if backend == "onnx":
        from diplostance.onnx_backend import OnnxPredictor

        return OnnxPredictor(model_dir, **options)
    return TransformerPredictor(model_dir, **options)
