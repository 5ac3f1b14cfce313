"""The transformer kind: a Hugging Face sequence classifier saved with `save_pretrained`, run with torch.

Folder: `config.json` (id2label such as `un_treaty=favor`), `model.safetensors` (or a sharded
index), the tokenizer files, `text_processing.json`. The predictor sorts sentences by length,
pads each batch only to its own longest sentence, and runs under `torch.inference_mode`;
`precision` picks fp32 (exactly the stock model's arithmetic), bf16, fp16 (GPU) or int8
dynamic quantisation (CPU). `backend=onnx` is `diplostance.predictors.onnx`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from diplostance.devices import check_inference_precision, default_batch_size, resolve_device
from diplostance.errors import UserError
from diplostance.modeling import encode_texts
from diplostance.predictors.folder import (
    ModelFolderError,
    check_text_processing,
    read_json,
    read_safetensors_header,
    require_files,
)
from diplostance.schema import LabelSpace
from diplostance.text import TextNormalization

CONFIG_FILE = "config.json"
PRECISIONS = ("fp32", "bf16", "fp16", "int8")  # fp16 on a GPU only, int8 on the CPU only
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


def _check_weights(model_dir: Path, labels: LabelSpace) -> None:
    if (model_dir / "model.safetensors").is_file():
        shards = [model_dir / "model.safetensors"]
    elif (model_dir / "model.safetensors.index.json").is_file():
        index = read_json(model_dir / "model.safetensors.index.json")
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
    tokenizer = read_json(model_dir / "tokenizer.json")
    vocab = tokenizer.get("model", {}).get("vocab") if isinstance(tokenizer, dict) else None
    if not vocab:
        raise ModelFolderError(f"{model_dir / 'tokenizer.json'}: holds no vocabulary")
    added = [t.get("id", -1) for t in tokenizer.get("added_tokens") or [] if isinstance(t, dict)]
    return max(len(vocab), max(added, default=-1) + 1)


def check_folder(model_dir: Path, config: dict) -> LabelSpace:
    check_text_processing(model_dir)
    require_files(model_dir, {"weights": WEIGHT_FILES})
    try:
        labels = LabelSpace.from_id2label(config["id2label"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ModelFolderError(f"{model_dir / CONFIG_FILE}: the targets cannot be read: {error!r}") from error
    label2id = config.get("label2id")
    if label2id and {int(v): k for k, v in label2id.items()} != labels.id2label:
        raise ModelFolderError(f"{model_dir / CONFIG_FILE}: label2id does not mirror id2label")
    if config.get("num_labels") not in (None, labels.num_labels):
        raise ModelFolderError(
            f"{model_dir / CONFIG_FILE}: num_labels {config['num_labels']} but id2label names {labels.num_labels}"
        )
    _check_weights(model_dir, labels)
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
    return labels


def check_options(precision: str = "fp32", device: str | torch.device = "auto", **options) -> None:
    """Refuse, before any work, a precision or device this machine cannot run (one-line UserError)."""
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    check_inference_precision(precision, resolve_device(str(device)))


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
        check_options(precision, device)
        self.device = resolve_device(str(device))
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


def load(model_dir: Path, config: dict, **options) -> TransformerPredictor:
    return TransformerPredictor(model_dir, **options)
