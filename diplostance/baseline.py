"""The classical baseline: TF-IDF character n-grams + one logistic regression per target.

Saved without pickle: the vocabulary as JSON, the idf vector and every weight matrix
as safetensors, the options as JSON. Loading runs no code from the folder.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from diplostance.schema import IGNORE_INDEX, LabelSpace

TFIDF_FILE = "tfidf.safetensors"
TFIDF_CONFIG = "tfidf_config.json"
VOCABULARY_FILE = "vocabulary.json"


def _vectorizer(options: Mapping, vocabulary: dict | None = None) -> TfidfVectorizer:
    return TfidfVectorizer(
        analyzer=options["analyzer"],
        ngram_range=tuple(options["ngram_range"]),
        min_df=options["min_df"],
        max_features=options.get("max_features"),
        sublinear_tf=options["sublinear_tf"],
        vocabulary=vocabulary,
    )


class TfidfStanceModel:
    def __init__(self, labels: LabelSpace, vectorizer: TfidfVectorizer, weights: dict[str, np.ndarray], options: dict):
        self.labels = labels
        self.vectorizer = vectorizer
        self.weights = weights
        self.options = options

    @classmethod
    def fit(cls, texts: Sequence[str], label_rows: Sequence[Sequence[int]], labels: LabelSpace, options: Mapping):
        vectorizer = _vectorizer(options)
        features = vectorizer.fit_transform(texts)
        rows = np.asarray(label_rows, dtype=int).reshape(-1, len(labels.targets))
        weights: dict[str, np.ndarray] = {}
        for t, target in enumerate(labels.targets):
            annotated = rows[:, t] != IGNORE_INDEX
            classes = np.unique(rows[annotated, t])
            if len(classes) == 0:
                continue  # target never annotated in training: predicted as uniform
            if len(classes) == 1:
                coef, intercept = np.zeros((1, features.shape[1])), np.zeros(1)
            else:
                classifier = LogisticRegression(
                    C=options["C"],
                    max_iter=options["max_iter"],
                    class_weight="balanced" if options["class_weight"] else None,
                )
                classifier.fit(features[annotated], rows[annotated, t])
                coef, intercept = classifier.coef_, classifier.intercept_
            weights[f"{target}.coef"] = coef.astype(np.float32)
            weights[f"{target}.intercept"] = intercept.astype(np.float32)
            weights[f"{target}.classes"] = classes.astype(np.int64)
        return cls(labels, vectorizer, weights, dict(options))

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(n_texts, n_targets, n_polarities) probabilities."""
        features = self.vectorizer.transform(texts)
        n_pol = len(self.labels.polarities)
        probs = np.full((len(texts), len(self.labels.targets), n_pol), 1.0 / n_pol, dtype=np.float32)
        for t, target in enumerate(self.labels.targets):
            if f"{target}.coef" not in self.weights:
                continue
            classes = self.weights[f"{target}.classes"]
            scores = features @ self.weights[f"{target}.coef"].T + self.weights[f"{target}.intercept"]
            if len(classes) == 1:
                class_probs = np.ones((len(texts), 1))
            elif len(classes) == 2:  # binary logistic regression: one score for the second class
                second = 1.0 / (1.0 + np.exp(-scores[:, 0]))
                class_probs = np.stack([1 - second, second], axis=1)
            else:
                shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
                class_probs = shifted / shifted.sum(axis=1, keepdims=True)
            probs[:, t, :] = 0.0
            probs[:, t, classes] = class_probs
        return probs

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        # safetensors writes raw buffers: a Fortran-ordered coef_ would come back scrambled.
        tensors = {"idf": self.vectorizer.idf_.astype(np.float64), **self.weights}
        save_file({name: np.ascontiguousarray(array) for name, array in tensors.items()}, str(directory / TFIDF_FILE))
        vocabulary = {term: int(index) for term, index in self.vectorizer.vocabulary_.items()}
        (directory / VOCABULARY_FILE).write_text(json.dumps(vocabulary, ensure_ascii=False), encoding="utf-8")
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
        vocabulary = json.loads((directory / VOCABULARY_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / TFIDF_FILE))
        vectorizer = _vectorizer(config["options"], vocabulary)
        vectorizer.idf_ = tensors.pop("idf")
        return cls(labels, vectorizer, tensors, config["options"])
