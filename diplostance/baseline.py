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
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from joblib import Parallel, delayed
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
log = logging.getLogger(__name__)


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


def class_probs(scores: np.ndarray, n_classes: int) -> np.ndarray:
    if n_classes == 1:
        return np.ones((scores.shape[0], 1))
    if n_classes == 2:  # binary logistic regression: one score for the second class
        second = 1.0 / (1.0 + np.exp(-scores[:, 0]))
        return np.stack([1 - second, second], axis=1)
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def target_probs(features, weights: Mapping[str, np.ndarray], labels: LabelSpace) -> np.ndarray:
    """(n, targets, polarities) from each target's regression in `weights` (`T.coef`, `T.intercept`,
    `T.classes`); a target without one is uniform. Shared by the tfidf and embedding kinds."""
    n_pol = len(labels.polarities)
    probs = np.full((features.shape[0], len(labels.targets), n_pol), 1.0 / n_pol, dtype=np.float32)
    for t, target in enumerate(labels.targets):
        if f"{target}.coef" not in weights:
            continue
        classes = weights[f"{target}.classes"]
        scores = features @ weights[f"{target}.coef"].T + weights[f"{target}.intercept"]
        probs[:, t, :] = 0.0
        probs[:, t, classes] = class_probs(np.asarray(scores), len(classes))
    return probs


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
        refit_on_train_dev: bool = False,
    ) -> TfidfStanceModel:
        """Fit every target; with a dev split, `C` (from `C_grid`) and the `none` offset are chosen on it.

        One fit per `C` and target (with `warm_start`, each starts from the previous `C`'s weights:
        fewer iterations, but lbfgs stops at its tolerance, so a close dev choice may differ); the
        `none` offsets are applied to the chosen fit's probabilities, so they cost no fit. Targets
        are fitted in parallel (`n_jobs`, identical results). With `refit_on_train_dev`, the features
        and each target are fitted again on train+dev with the `C` and offsets chosen on dev.
        """
        options = dict(options)
        blocks = feature_blocks(options)
        if options.get("block_weights") and len(options["block_weights"]) != len(blocks):
            raise UserError(
                f"tfidf.block_weights has {len(options['block_weights'])} value(s) for {len(blocks)} feature "
                "block(s): give one weight per entry of tfidf.features, or null"
            )
        rows = np.asarray(label_rows, dtype=int).reshape(-1, len(labels.targets))
        use_dev = dev_texts is not None and len(dev_texts) > 0
        dev = np.asarray(dev_rows, dtype=int).reshape(-1, len(labels.targets)) if use_dev else None
        c_grid = [float(c) for c in (options.get("C_grid") or [options["C"]])] if use_dev else [float(options["C"])]
        model = cls._fit_features(labels, texts, options, "training")
        features = model.features(texts)
        dev_features = model.features(dev_texts) if use_dev else None
        fits = model._fit_targets(features, rows, {t: c_grid for t in labels.targets}, dev_features, dev)
        selection: dict = {}
        for target, fit in fits.items():
            if len(fit["grid"]) > 1:
                selection[target] = {
                    "C": fit["C"],
                    "dev_f_avg_by_C": {c: g["dev_f_avg"] for c, g in fit["grid"].items()},
                }
        offsets = [0.0] * len(labels.targets)
        if use_dev and options.get("none_offset_grid"):
            dev_probs = model.predict_proba(dev_texts, raw=True)
            offsets, offset_table = choose_none_offsets(dev_probs, dev, labels, options["none_offset_grid"])
            for target, scores in offset_table.items():
                selection.setdefault(target, {})["dev_f_avg_by_none_offset"] = scores
                log.info(
                    "tfidf: %r: none offset %g chosen on dev (dev f_avg by offset: %s)",
                    target,
                    offsets[labels.targets.index(target)],
                    ", ".join(f"{o:g}: {s:.4f}" for o, s in scores.items()),
                )
        model.weights["none_offset"] = np.asarray(offsets, dtype=np.float32)
        for t, target in enumerate(labels.targets):
            if target in selection:
                selection[target]["none_offset"] = offsets[t]
        model.options["selection"] = selection
        if refit_on_train_dev and use_dev:
            all_texts = [*texts, *dev_texts]
            refit = cls._fit_features(labels, all_texts, options, "training and dev")
            chosen = {target: [fit["C"]] for target, fit in fits.items()}
            refit._fit_targets(refit.features(all_texts), np.concatenate([rows, dev]), chosen, None, None)
            refit.weights["none_offset"] = model.weights["none_offset"]
            refit.options["selection"] = selection
            refit.options["refit_on_train_dev"] = {"train_sentences": len(texts), "dev_sentences": len(dev_texts)}
            return refit
        return model

    @classmethod
    def _fit_features(cls, labels: LabelSpace, texts: Sequence[str], options: dict, what: str) -> TfidfStanceModel:
        started = time.perf_counter()
        sublinear = options.get("sublinear_tf", True)
        vectorizers = [_fit_vectorizer(block, sublinear, texts) for block in feature_blocks(options)]
        log.info(
            "tfidf: %d features from %d %s sentences in %.1f s",
            sum(len(v.vocabulary_) for v in vectorizers),
            len(texts),
            what,
            time.perf_counter() - started,
        )
        return cls(labels, vectorizers, {}, dict(options))

    def _fit_targets(self, features, rows: np.ndarray, grids: dict, dev_features, dev: np.ndarray | None) -> dict:
        """Fit each target over its `C` grid (in parallel over targets); keep the best fit on dev.

        Progress is logged as each target finishes: one line per grid point, one for the choice."""
        labels = self.labels
        jobs = []
        for t, target in enumerate(labels.targets):
            annotated = rows[:, t] != IGNORE_INDEX
            classes = np.unique(rows[annotated, t])
            if len(classes) == 0:
                continue  # target never annotated in training: predicted as uniform
            on_dev = dev[:, t] != IGNORE_INDEX if dev is not None else None
            dev_part = (dev_features[on_dev], dev[on_dev, t]) if dev is not None and on_dev.any() else None
            grid = grids.get(target) or [float(self.options["C"])]  # a refit: a target first annotated in dev
            jobs.append((t, target, features[annotated], rows[annotated, t], classes, grid, dev_part))
        n_jobs = max(1, min(int(self.options.get("n_jobs") or 1), len(jobs)))
        if n_jobs > 1:
            log.info("tfidf: %d targets on %d parallel workers", len(jobs), n_jobs)
        arguments = [
            (i, x, y, classes, grid, self.options, dev_part, labels.polarities)
            for i, (_, _, x, y, classes, grid, dev_part) in enumerate(jobs)
        ]
        if n_jobs > 1:
            results = Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
                delayed(fit_target_grid)(*a) for a in arguments
            )
        else:
            results = (fit_target_grid(*a) for a in arguments)
        fits = {}
        for done, result in enumerate(results, start=1):
            _, target, x, *_ = jobs[result["job"]]
            for c, point in result["grid"].items():
                log.info(
                    "tfidf: target %d/%d %r (%d rows): C=%g%s, %d iterations, %.1f s",
                    done,
                    len(jobs),
                    target,
                    x.shape[0],
                    c,
                    f", dev f_avg {point['dev_f_avg']:.4f}" if point["dev_f_avg"] is not None else "",
                    point["iterations"],
                    point["seconds"],
                )
            if len(result["grid"]) > 1:
                log.info("tfidf: target %d/%d %r: C=%g chosen on dev", done, len(jobs), target, result["C"])
            coef, intercept, classes = result["coef"], result["intercept"], result["classes"]
            self.weights[f"{target}.coef"] = coef.astype(np.float32)
            self.weights[f"{target}.intercept"] = intercept.astype(np.float32)
            self.weights[f"{target}.classes"] = classes.astype(np.int64)
            fits[target] = result
        return {target: fits[target] for target in labels.targets if target in fits}  # in target order

    def predict_proba(self, texts: Sequence[str], raw: bool = False) -> np.ndarray:
        """(n_texts, n_targets, n_polarities) probabilities; `raw` skips the `none` offsets."""
        probs = target_probs(self.features(texts), self.weights, self.labels)
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


def fit_target_grid(
    job: int,
    features,
    y: np.ndarray,
    classes: np.ndarray,
    grid: Sequence[float],
    options: Mapping,
    dev_part: tuple | None,
    polarities: Sequence[str],
) -> dict:
    """One target over its `C` grid, smallest `C` first, each fit warm-started from the previous one
    (with `warm_start`). `features` may be sparse (tf-idf) or dense (sentence embeddings).

    Returns the dev f_avg, iterations and seconds of each grid point and the weights of the best
    (ties: the smallest `C`, the stronger regularisation). Runs in a worker process: no logging here."""
    scored = len(grid) > 1
    points: dict[float, dict] = {}
    best: tuple | None = None  # (score, coef, intercept, C)
    if len(classes) == 1:
        coef, intercept = np.zeros((1, features.shape[1])), np.zeros(1)
        score = _dev_score(coef, intercept, dev_part, classes, polarities) if scored else None
        points = {c: {"dev_f_avg": score, "iterations": 0, "seconds": 0.0} for c in grid}
        return {"job": job, "grid": points, "C": min(grid), "coef": coef, "intercept": intercept, "classes": classes}
    classifier = LogisticRegression(
        max_iter=options.get("max_iter", 2000),
        class_weight="balanced" if options.get("class_weight", True) else None,
        warm_start=bool(options.get("warm_start", False)),
    )
    for c in sorted(grid):
        started = time.perf_counter()
        classifier.set_params(C=c)
        classifier.fit(features, y)
        coef, intercept = classifier.coef_.copy(), classifier.intercept_.copy()
        score = _dev_score(coef, intercept, dev_part, classes, polarities) if scored else None
        points[c] = {
            "dev_f_avg": score,
            "iterations": int(np.max(classifier.n_iter_)),
            "seconds": round(time.perf_counter() - started, 2),
        }
        if best is None or (score or 0.0) > best[0]:  # ascending C: a tie keeps the smaller C
            best = (score or 0.0, coef, intercept, c)
    _, coef, intercept, chosen = best
    return {
        "job": job,
        "grid": {c: points[c] for c in grid},  # in the configured order
        "C": chosen,
        "coef": coef,
        "intercept": intercept,
        "classes": classes,
    }


def _dev_score(coef, intercept, dev_part: tuple | None, classes: np.ndarray, polarities: Sequence[str]) -> float:
    """f_avg on the dev rows that annotate the target (0.0 without any)."""
    if dev_part is None:
        return 0.0
    dev_features, gold = dev_part
    probs = class_probs(np.asarray(dev_features @ coef.T + intercept), len(classes))
    return target_f_avg(classes[probs.argmax(1)], gold, polarities)
