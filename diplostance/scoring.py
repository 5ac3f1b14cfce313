"""Stance metrics: per-label P/R/F1, SemEval-2016 `f_avg`, macro-F1, bootstrap CIs.

`stance_scores` is the single implementation; the `evaluate` module in
`diplostance/metrics/stance_f1` wraps it so `evaluate.load(STANCE_METRIC_PATH)` works
offline, and the bootstrap calls it directly (thousands of resamples).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from diplostance.errors import BadDataError
from diplostance.schema import IGNORE_INDEX

STANCE_METRIC_PATH = str(Path(__file__).parent / "metrics" / "stance_f1")
NEUTRAL_POLARITY = "none"


class NothingToScoreError(BadDataError, ValueError):
    """Every label of the scored sentences is empty (exit status 1, one line)."""


def confusion(pred: np.ndarray, ref: np.ndarray, num_classes: int) -> np.ndarray:
    """confusion[i, j] = count of reference i predicted as j."""
    return np.bincount(ref * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def _label_scores(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    true_pos = np.diag(matrix).astype(float)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_pos / predicted, 0.0)
        recall = np.where(support > 0, true_pos / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return precision, recall, f1, support


def stance_scores(
    predictions, references, targets, polarities, neutral: str = NEUTRAL_POLARITY, undefined: float | None = 0.0
) -> dict:
    """Score (n_examples, n_targets) polarity indices; IGNORE_INDEX marks unannotated.

    Targets with no annotated example are left out rather than scored as zero.
    `f_avg` averages F1 over the non-neutral polarities (favor, against). It is undefined for a
    target whose gold labels hold no non-neutral polarity (only `none`): its F1s are 0 whatever the
    model predicts. Such a target's `f_avg` is `undefined`, and with `undefined=None` (what reports
    and metrics.json use: null, never a score) it is also left out of `macro_f_avg`, which is None
    when no target has a defined `f_avg`. The default 0.0 keeps a number for the callers that rank
    candidates (checkpoints, grids) by it.
    """
    pred = np.asarray(predictions, dtype=int).reshape(-1, len(targets))
    ref = np.asarray(references, dtype=int).reshape(-1, len(targets))
    stance_ids = [i for i, p in enumerate(polarities) if p != neutral]
    per_target = {}
    for t, target in enumerate(targets):
        annotated = ref[:, t] != IGNORE_INDEX
        if not annotated.any():
            continue
        matrix = confusion(pred[annotated, t], ref[annotated, t], len(polarities))
        precision, recall, f1, support = _label_scores(matrix)
        defined = bool(support[stance_ids].sum() > 0)
        per_target[target] = {
            "f_avg": float(f1[stance_ids].mean()) if defined else undefined,
            "macro_f1": float(f1.mean()),
            "labels": {
                polarity: {
                    "precision": float(precision[i]),
                    "recall": float(recall[i]),
                    "f1": float(f1[i]),
                    "support": int(support[i]),
                }
                for i, polarity in enumerate(polarities)
            },
            "confusion": matrix.tolist(),
        }
    if not per_target:
        raise NothingToScoreError(
            f"none of the {len(ref)} sentence(s) has an annotated target (every label is empty): nothing to score"
        )
    f_avgs = [s["f_avg"] for s in per_target.values() if s["f_avg"] is not None]
    return {
        "macro_f_avg": float(np.mean(f_avgs)) if f_avgs else None,
        "macro_f1": float(np.mean([s["macro_f1"] for s in per_target.values()])),
        "num_examples": len(ref),
        "targets": per_target,
    }


def bootstrap_intervals(
    predictions, references, targets, polarities, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> dict:
    """Percentile bootstrap over sentences for macro_f_avg and each target's f_avg.

    A resample in which a figure is undefined (see `stance_scores`) does not count for that figure;
    a figure undefined in every resample has no interval (None, and no entry for a target).
    """
    pred = np.asarray(predictions, dtype=int).reshape(-1, len(targets))
    ref = np.asarray(references, dtype=int).reshape(-1, len(targets))
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        rows = rng.integers(0, len(ref), len(ref))
        try:
            scores = stance_scores(pred[rows], ref[rows], targets, polarities, undefined=None)
        except NothingToScoreError:  # a resample with no annotated example at all
            continue
        if scores["macro_f_avg"] is not None:
            samples.setdefault("macro_f_avg", []).append(scores["macro_f_avg"])
        for target, target_scores in scores["targets"].items():
            if target_scores["f_avg"] is not None:
                samples.setdefault(target, []).append(target_scores["f_avg"])
    tail = (1 - confidence) / 2 * 100
    interval = {
        name: [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]
        for name, values in samples.items()
    }
    return {
        "confidence": confidence,
        "n_resamples": n_resamples,
        "macro_f_avg": interval.pop("macro_f_avg", None),
        "targets": {target: {"f_avg": bounds} for target, bounds in interval.items()},
    }
