"""The classical baseline: TF-IDF word and character n-grams + one logistic regression per target.

Several feature blocks (by default character n-grams within words and word uni- and
bigrams) are weighted separately and concatenated. Each target's regularisation `C`
is chosen on the dev split from a small grid, and so is a `none` offset: f_avg scores
only favor and against, and on real news the costly error is a stance predicted
`none`, so each target's `none` log-probability is lowered by the offset that scores
best on dev. The grid and the dev scores are kept in the saved options.

Saved without pickle: each block's vocabulary as JSON, the idf vectors and every
weight matrix as safetensors, the options as JSON. Loading runs no code from the folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from diplostance.errors import UserError
from diplostance.schema import IGNORE_INDEX, LabelSpace
from diplostance.scoring import stance_scores

TFIDF_FILE = "tfidf.safetensors"
TFIDF_CONFIG = "tfidf_config.json"
VOCABULARY_FILE = "vocabulary.json"
NONE = "none"


def feature_blocks(options: Mapping) -> list[dict]:
    """The configured feature blocks; an old single-analyzer config is one block."""
    if options.get("features"):
        return [dict(block) for block in options["features"]]
    keys = ("analyzer", "ngram_range", "min_df", "max_features")
    return [{k: options.get(k) for k in keys}]


def _vectorizer(block: Mapping, sublinear_tf: bool, vocabulary: dict | None = None) -> TfidfVectorizer:
    words = {"token_pattern": r"(?u)\b\w+\b"} if block["analyzer"] == "word" else {}  # keep «و», «لا»
    return TfidfVectorizer(
        analyzer=block["analyzer"],
        ngram_range=tuple(block["ngram_range"]),
        min_df=block.get("min_df", 1) if vocabulary is None else 1,
        max_features=block.get("max_features"),
        sublinear_tf=sublinear_tf,
        vocabulary=vocabulary,
        **words,
    )


def _fit_vectorizer(block: Mapping, sublinear_tf: bool, texts: Sequence[str]) -> TfidfVectorizer:
    vectorizer = _vectorizer(block, sublinear_tf)
    try:
        vectorizer.fit(texts)
    except ValueError:  # too few texts for min_df: keep every term rather than fail on small data
        vectorizer = _vectorizer({**block, "min_df": 1}, sublinear_tf)
        vectorizer.fit(texts)
    return vectorizer


def _class_probs(scores: np.ndarray, n_classes: int) -> np.ndarray:
    if n_classes == 1:
        return np.ones((scores.shape[0], 1))
    if n_classes == 2:  # binary logistic regression: one score for the second class
        second = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        return np.stack([1 - second, second], axis=1)
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def apply_none_offset(probs: np.ndarray, polarities: Sequence[str], offsets: Sequence[float]) -> np.ndarray:
    """Lower each target's `none` log-probability by its offset and renormalise. (n, targets, polarities)."""
    if NONE not in polarities or not any(offsets):
        return probs
    k = list(polarities).index(NONE)
    out = probs.astype(np.float64, copy=True)
    out[:, :, k] *= np.exp(-np.asarray(offsets, dtype=np.float64))[None, :]
    out /= out.sum(axis=-1, keepdims=True)
    return out.astype(probs.dtype)


def target_f_avg(predictions: np.ndarray, gold: np.ndarray, polarities: Sequence[str]) -> float:
    """f_avg of one target's polarity indices (every gold label annotated), rounded as the grids record it."""
    result = stance_scores(predictions[:, None], gold[:, None], ("target",), polarities)
    return round(float(result["targets"]["target"]["f_avg"]), 4)


def choose_none_offsets(
    probs: np.ndarray, rows: np.ndarray, labels: LabelSpace, grid: Sequence[float]
) -> tuple[list[float], dict]:
    """Per target, the `none` offset from `grid` with the best f_avg on (probs, rows); ties keep the smallest."""
    chosen, table = [], {}
    for t, target in enumerate(labels.targets):
        annotated = rows[:, t] != IGNORE_INDEX
        if not annotated.any() or NONE not in labels.polarities:
            chosen.append(0.0)
            continue
        scores = {}
        for offset in grid:
            offsets = [0.0] * len(labels.targets)
            offsets[t] = float(offset)
            preds = apply_none_offset(probs[annotated], labels.polarities, offsets).argmax(-1)
            scores[float(offset)] = target_f_avg(preds[:, t], rows[annotated][:, t], labels.polarities)
        best = max(scores.values())
        chosen.append(min(o for o, s in scores.items() if s == best))
        table[target] = scores
    return chosen, table


class TfidfStanceModel:
    def __init__(
        self,
        labels: LabelSpace,
        vectorizers: list[TfidfVectorizer],
        weights: dict[str, np.ndarray],
        options: dict,
    ):
        self.labels = labels
        self.vectorizers = vectorizers
        self.weights = weights
        self.options = options

    def features(self, texts: Sequence[str]) -> sp.csr_matrix:
        blocks = [v.transform(texts) for v in self.vectorizers]
        scales = self.options.get("block_weights") or [1.0] * len(blocks)
        return sp.hstack([b * w for b, w in zip(blocks, scales, strict=True)]).tocsr()

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        label_rows: Sequence[Sequence[int]],
        labels: LabelSpace,
        options: Mapping,
        dev_texts: Sequence[str] | None = None,
        dev_rows: Sequence[Sequence[int]] | None = None,
    ) -> TfidfStanceModel:
        """Fit every target; with a dev split, `C` (from `C_grid`) and the `none` offset are chosen on it."""
        options = dict(options)
        blocks = feature_blocks(options)
        if options.get("block_weights") and len(options["block_weights"]) != len(blocks):
            raise UserError(
                f"tfidf.block_weights has {len(options['block_weights'])} value(s) for {len(blocks)} feature "
                "block(s): give one weight per entry of tfidf.features, or null"
            )
        sublinear = options.get("sublinear_tf", True)
        vectorizers = [_fit_vectorizer(block, sublinear, texts) for block in blocks]
        model = cls(labels, vectorizers, {}, options)
        features = model.features(texts)
        rows = np.asarray(label_rows, dtype=int).reshape(-1, len(labels.targets))
        use_dev = dev_texts is not None and len(dev_texts) > 0
        dev_features = model.features(dev_texts) if use_dev else None
        dev = np.asarray(dev_rows, dtype=int).reshape(-1, len(labels.targets)) if use_dev else None
        c_grid = [float(c) for c in (options.get("C_grid") or [options["C"]])] if use_dev else [float(options["C"])]
        selection: dict = {}
        for t, target in enumerate(labels.targets):
            annotated = rows[:, t] != IGNORE_INDEX
            classes = np.unique(rows[annotated, t])
            if len(classes) == 0:
                continue  # target never annotated in training: predicted as uniform
            candidates = {}
            for c in c_grid:
                candidates[c] = _fit_target(features[annotated], rows[annotated, t], classes, c, options)
            if len(candidates) > 1:
                dev_scores = {c: _dev_f_avg(w, dev_features, dev[:, t], classes, labels) for c, w in candidates.items()}
                best = max(dev_scores.values())
                chosen_c = min(c for c, s in dev_scores.items() if s == best)  # ties: the stronger regularisation
                selection[target] = {"C": chosen_c, "dev_f_avg_by_C": dev_scores}
            else:
                chosen_c = c_grid[0]
            coef, intercept = candidates[chosen_c]
            model.weights[f"{target}.coef"] = coef.astype(np.float32)
            model.weights[f"{target}.intercept"] = intercept.astype(np.float32)
            model.weights[f"{target}.classes"] = classes.astype(np.int64)
        offsets = [0.0] * len(labels.targets)
        if use_dev and options.get("none_offset_grid"):
            dev_probs = model.predict_proba(dev_texts, raw=True)
            offsets, offset_table = choose_none_offsets(dev_probs, dev, labels, options["none_offset_grid"])
            for target, scores in offset_table.items():
                selection.setdefault(target, {})["dev_f_avg_by_none_offset"] = scores
        model.weights["none_offset"] = np.asarray(offsets, dtype=np.float32)
        for t, target in enumerate(labels.targets):
            if target in selection:
                selection[target]["none_offset"] = offsets[t]
        model.options["selection"] = selection
        return model

    def predict_proba(self, texts: Sequence[str], raw: bool = False) -> np.ndarray:
        """(n_texts, n_targets, n_polarities) probabilities; `raw` skips the `none` offsets."""
        features = self.features(texts)
        n_pol = len(self.labels.polarities)
        probs = np.full((len(texts), len(self.labels.targets), n_pol), 1.0 / n_pol, dtype=np.float32)
        for t, target in enumerate(self.labels.targets):
            if f"{target}.coef" not in self.weights:
                continue
            classes = self.weights[f"{target}.classes"]
            scores = features @ self.weights[f"{target}.coef"].T + self.weights[f"{target}.intercept"]
            probs[:, t, :] = 0.0
            probs[:, t, classes] = _class_probs(np.asarray(scores), len(classes))
        offsets = self.weights.get("none_offset")
        if raw or offsets is None:
            return probs
        return apply_none_offset(probs, self.labels.polarities, offsets.tolist())

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # safetensors writes raw buffers: a Fortran-ordered coef_ would come back scrambled.
        tensors = {f"idf.{i}": v.idf_.astype(np.float64) for i, v in enumerate(self.vectorizers)}
        tensors.update(self.weights)
        save_file({name: np.ascontiguousarray(array) for name, array in tensors.items()}, str(directory / TFIDF_FILE))
        vocabularies = [{term: int(index) for term, index in v.vocabulary_.items()} for v in self.vectorizers]
        (directory / VOCABULARY_FILE).write_text(json.dumps(vocabularies, ensure_ascii=False), encoding="utf-8")
        config = {
            "model_type": "diplostance-tfidf",
            "targets": list(self.labels.targets),
            "polarities": list(self.labels.polarities),
            "id2label": {str(k): v for k, v in self.labels.id2label.items()},
            "options": self.options,
        }
        (directory / TFIDF_CONFIG).write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: str | Path) -> TfidfStanceModel:
        directory = Path(directory)
        config = json.loads((directory / TFIDF_CONFIG).read_text(encoding="utf-8"))
        labels = LabelSpace(tuple(config["targets"]), tuple(config["polarities"]))
        vocabularies = json.loads((directory / VOCABULARY_FILE).read_text(encoding="utf-8"))
        if isinstance(vocabularies, dict):  # a folder saved before feature blocks: one block
            vocabularies = [vocabularies]
        tensors = load_file(str(directory / TFIDF_FILE))
        if "idf" in tensors:
            tensors["idf.0"] = tensors.pop("idf")
        options = config["options"]
        vectorizers = []
        for i, (block, vocabulary) in enumerate(zip(feature_blocks(options), vocabularies, strict=True)):
            vectorizer = _vectorizer(block, options.get("sublinear_tf", True), vocabulary)
            vectorizer.idf_ = tensors.pop(f"idf.{i}")
            vectorizers.append(vectorizer)
        return cls(labels, vectorizers, tensors, options)


def _fit_target(features, y: np.ndarray, classes: np.ndarray, c: float, options: Mapping):
    if len(classes) == 1:
        return np.zeros((1, features.shape[1])), np.zeros(1)
    classifier = LogisticRegression(
        C=c,
        max_iter=options.get("max_iter", 2000),
        class_weight="balanced" if options.get("class_weight", True) else None,
    )
    classifier.fit(features, y)
    return classifier.coef_, classifier.intercept_


def _dev_f_avg(weights, dev_features, dev_column: np.ndarray, classes: np.ndarray, labels: LabelSpace) -> float:
    annotated = dev_column != IGNORE_INDEX
    if not annotated.any():
        return 0.0
    coef, intercept = weights
    scores = dev_features[annotated] @ coef.T + intercept
    probs = _class_probs(np.asarray(scores), len(classes))
    return target_f_avg(classes[probs.argmax(1)], dev_column[annotated], labels.polarities)
