"""The transformer kind: a Hugging Face sequence classifier saved with `save_pretrained`, run with torch.

Folder: `config.json` (id2label such as `un_treaty=favor`), `model.safetensors` (or a sharded
index), the tokenizer files, `text_processing.json`. The predictor sorts sentences by length,
pads each batch only to its own longest sentence, and runs under `torch.inference_mode`;
`precision` picks fp32 (exactly the stock model's arithmetic), bf16, fp16 (GPU) or int8
dynamic quantisation (CPU). `backend=onnx` is `diplostance.predictors.onnx`.

`predict_encoded` takes token ids made by `encode` (the labeller's worker processes make them), so
normalisation and tokenisation can run elsewhere. Each batch is padded with numpy into one int64
array (what `tokenizer.pad` builds, without its per-call Python cost); on a GPU the arrays go
through pinned memory with non-blocking copies, the softmax runs on the device, and the call reads
back to the host once, at its end. Attention is PyTorch's SDPA where the model supports it.
"""

from __future__ import annotations

import contextlib
import itertools
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
    check_config_matches_weights,
    check_text_processing,
    read_json,
    read_safetensors_header,
    require_files,
    tokenizer_facts,
)
from diplostance.schema import LabelSpace
from diplostance.text import TextNormalization, normalize

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
# Sentences per forward pass on a GPU when none is given: length-sorted batches pad little, and a wide
# batch keeps an H100/H200 busy in bf16 (128, the labeller's other GPU default, leaves it waiting on launches).
GPU_PREDICT_BATCH = 512


def _check_weights(model_dir: Path, labels: LabelSpace, config: dict) -> None:
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
    else:  # only pytorch_model.bin: a pickle, which can run code when loaded
        raise ModelFolderError(
            f"{model_dir / 'pytorch_model.bin'}: a pickled PyTorch checkpoint, which diplostance does not load; "
            "save the model as safetensors (model.save_pretrained(folder), the default since transformers 4.35)"
        )
    tensors = {}
    for shard in shards:
        for name, entry in read_safetensors_header(shard).items():
            if name.endswith(HEAD_SUFFIXES) and entry.get("shape") and entry["shape"][0] != labels.num_labels:
                raise ModelFolderError(
                    f"{shard}: the output layer {name} has {entry['shape'][0]} outputs, but config.json's id2label "
                    f"names {labels.num_labels} labels: weights and config do not belong together"
                )
            tensors[name] = entry
    check_config_matches_weights(model_dir / CONFIG_FILE, config, tensors, shards[0])


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
    _check_weights(model_dir, labels, config)
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
        batch_size: int | None = None,  # None: 16 on the CPU (diplostance.devices), GPU_PREDICT_BATCH on a GPU
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
        use_sdpa(model)
        self.labels = LabelSpace.from_id2label(model.config.id2label)
        if precision in ("bf16", "fp16"):  # half weights: on a GPU the tensor cores, on the CPU bf16 kernels
            model = model.to(torch.bfloat16 if precision == "bf16" else torch.float16)
        elif precision == "int8":
            with warnings.catch_warnings():  # torch.ao's deprecation notice; the API still works
                warnings.simplefilter("ignore")
                model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        self.model, self.precision = model.to(self.device), precision
        self.attention = getattr(model.config, "_attn_implementation", None)  # "sdpa" where supported
        on_gpu = self.device.type == "cuda"
        self.batch_size = batch_size or (GPU_PREDICT_BATCH if on_gpu else default_batch_size(self.device))
        self.max_length = max_length
        # what tokenizer.pad fills and where: its pad id (the model's, else 0, when it has none), its side
        pad_id = self.tokenizer.pad_token_id
        self.pad_id = pad_id if pad_id is not None else (getattr(model.config, "pad_token_id", None) or 0)
        self.pad_left = self.tokenizer.padding_side == "left"
        self.with_mask = "attention_mask" in self.tokenizer.model_input_names

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Normalised and tokenised with one call of the (fast) tokenizer for all of `texts`."""
        return encode_texts(self.tokenizer, texts, self.normalization, self.max_length)["input_ids"]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.predict_encoded(self.encode(texts))

    def token_facts(self, texts: Sequence[str]) -> np.ndarray:
        """Per text: word pieces read, of them unknown, cut at max_length (predictors.folder.tokenizer_facts)."""
        normalised = [normalize(t, self.normalization) for t in texts]
        return tokenizer_facts(self.tokenizer, normalised, self.max_length)

    def pad(self, rows: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """One batch as the model's inputs: input_ids (and attention_mask) as int64, padded to the longest
        row, exactly as tokenizer.pad(..., return_tensors="pt") makes them; pinned on a GPU machine."""
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        width = int(lengths.max())
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        columns = np.arange(width)
        mask = columns >= width - lengths[:, None] if self.pad_left else columns < lengths[:, None]
        ids[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
        inputs = {"input_ids": torch.from_numpy(ids)}
        if self.with_mask:
            inputs["attention_mask"] = torch.from_numpy(mask.astype(np.int64))
        if self.device.type == "cuda":  # page-locked: the copy to the device runs without the host waiting
            inputs = {k: v.pin_memory() for k, v in inputs.items()}
        return inputs

    def predict_encoded(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """(len(ids), targets, polarities) probabilities from token ids made by `encode`."""
        n_targets, n_pol = len(self.labels.targets), len(self.labels.polarities)
        out = np.empty((len(ids), n_targets, n_pol), dtype=np.float32)
        if not len(ids):
            return out
        order, probs = self.device_proba(ids)
        out[order] = probs.cpu().numpy()  # the call's one read back to the host
        return out

    def device_proba(self, ids: Sequence[Sequence[int]]) -> tuple[np.ndarray, torch.Tensor]:
        """The length order of `ids` and, on the model's device, their probabilities in that order. Nothing
        is read back to the host here (each batch's probabilities stay on the device until the caller's
        one copy), so the host queues batch after batch without waiting for the device."""
        n_targets, n_pol = len(self.labels.targets), len(self.labels.polarities)
        order = np.argsort([len(x) for x in ids], kind="stable")
        on_device = []
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                inputs = self.pad([ids[i] for i in batch])
                inputs = {k: v.to(self.device, non_blocking=True) for k, v in inputs.items()}
                logits = self.model(**inputs).logits.float()
                on_device.append(torch.softmax(logits.view(len(batch), n_targets, n_pol), dim=-1))
            return order, torch.cat(on_device)


def use_sdpa(model) -> None:
    """PyTorch's fused scaled-dot-product attention where the model supports it. transformers 5 picks it by
    default (BERT, RoBERTa, ELECTRA, ...); a config saved with another choice ("eager") is switched."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa" and getattr(model, "_supports_sdpa", False):
        with contextlib.suppress(ValueError, ImportError, AttributeError):  # kept as it is when it cannot switch
            model.set_attn_implementation("sdpa")


def load(model_dir: Path, config: dict, **options) -> TransformerPredictor:
    return TransformerPredictor(model_dir, **options)
