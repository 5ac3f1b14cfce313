"""Fitting an ensemble model folder: weights and `none` offsets chosen on dev, the folder written.

An ensemble folder is self-contained and loads like any other model folder (the ensemble kind,
`diplostance.predictors.ensemble`, reads it):

    ensemble_config.json     {"model_type": "diplostance-ensemble", "members": [{"path": "transformer",
                              "weight": 0.5}, {"path": "tfidf", "weight": 0.5}], "none_offset": [...], ...}
    transformer/             a member model folder (save_pretrained), copied in
    tfidf/                   another member model folder

The weights and each target's `none` offset are chosen on the dev split (see
`choose_ensemble`), so the combination is only as good as dev says; `evaluate.py` and
`label.py` accept the folder as they accept a transformer or tf-idf folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diplostance.baseline import apply_none_offset, choose_none_offsets
from diplostance.errors import UserError
from diplostance.evaluation import align_references
from diplostance.predictors import load_predictor
from diplostance.predictors.ensemble import ENSEMBLE_CONFIG, MODEL_TYPE, EnsembleFolderError, combine
from diplostance.schema import LabelSpace
from diplostance.scoring import stance_scores

__all__ = ["ENSEMBLE_CONFIG", "MODEL_TYPE", "EnsembleChoice", "EnsembleFolderError", "choose_ensemble", "combine"]
__all__ += ["fit_ensemble", "save_ensemble"]


REALISTIC_SLICES = ("seed", "annotated", "news")  # dev slices that read like real news


@dataclass
class EnsembleChoice:
    weights: list[float]
    none_offset: list[float]
    dev_macro_f_avg: float
    grid: dict  # "w1/w2/..." -> dev macro_f_avg of that mixture (before the `none` offsets)
    members: list[str] = field(default_factory=list)
    selected_on: str = "dev"  # which dev sentences chose the weights: all of dev, or its realistic slices
    dev_sentences: int = 0
    noise: float = 0.0  # paired-bootstrap standard error of (best mixture's score - the kept one's)


def weight_grid(n_members: int, step: float = 0.1) -> list[tuple[float, ...]]:
    """Every mixture of n members whose weights are multiples of `step` and sum to 1."""
    units = round(1 / step)

    def compositions(n: int, total: int):
        if n == 1:
            yield (total,)
            return
        for first in range(total, -1, -1):
            for rest in compositions(n - 1, total - first):
                yield (first, *rest)

    return [tuple(round(u * step, 10) for u in c) for c in compositions(n_members, units)]


def _key(weights: Sequence[float]) -> str:
    return "/".join(f"{w:g}" for w in weights)


def _macro(probs: np.ndarray, rows: np.ndarray, labels: LabelSpace) -> float:
    return float(stance_scores(probs.argmax(-1), rows, labels.targets, labels.polarities)["macro_f_avg"])


def within_noise(
    candidates: dict[tuple, np.ndarray], best: tuple, rows: np.ndarray, labels: LabelSpace, resamples: int = 100
) -> dict[tuple, float]:
    """Each candidate's paired-bootstrap standard error of (best's macro_f_avg - its own), over sentences.

    The same resamples score every candidate, so the difference's noise is what dev can tell apart."""
    rng = np.random.default_rng(0)
    draws = [rng.integers(0, len(rows), len(rows)) for _ in range(resamples)]

    def score(preds, idx):
        return stance_scores(preds[idx], rows[idx], labels.targets, labels.polarities)["macro_f_avg"]

    best_scores = np.array([score(candidates[best], idx) for idx in draws])
    return {
        weights: float(np.std(best_scores - np.array([score(preds, idx) for idx in draws])))
        for weights, preds in candidates.items()
    }


def choose_ensemble(
    member_probs: Sequence[np.ndarray],
    dev_rows: np.ndarray,
    labels: LabelSpace,
    step: float = 0.1,
    none_offset_grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
    prefer_even_within_noise: bool = True,
) -> EnsembleChoice:
    """Members' weights (a grid on the simplex) and per-target `none` offsets, chosen on dev macro_f_avg.

    Dev is small and mostly composed, so its best mixture is partly its noise: with
    `prefer_even_within_noise`, every mixture whose score is below the best by less than the
    paired-bootstrap standard error of that difference counts as as good, and the most even of
    them is kept (members of different kinds err differently; weights fitted to dev noise are
    what transfers worst to real text). Ties always go to the most even mixture.
    """
    n = len(member_probs)
    if n < 2:
        raise ValueError("an ensemble needs at least two members")
    grid = {
        weights: round(_macro(combine(member_probs, weights), dev_rows, labels), 4) for weights in weight_grid(n, step)
    }
    best_weights = max(grid, key=lambda w: (grid[w], -_unevenness(w)))
    noise = {w: 0.0 for w in grid}
    if prefer_even_within_noise:
        predictions = {w: combine(member_probs, w).argmax(-1) for w in grid}
        noise = within_noise(predictions, best_weights, dev_rows, labels)
    near = [w for w, score in grid.items() if score >= grid[best_weights] - noise[w]]
    weights = min(near, key=lambda w: (_unevenness(w), -grid[w]))
    probs = combine(member_probs, weights)
    offsets, _ = choose_none_offsets(probs, dev_rows, labels, none_offset_grid)
    score = _macro(apply_none_offset(probs, labels.polarities, offsets), dev_rows, labels)
    return EnsembleChoice(
        list(weights), offsets, round(score, 4), {_key(w): s for w, s in grid.items()},
        dev_sentences=len(dev_rows), noise=round(noise[weights], 4),
    )  # fmt: skip


def _unevenness(weights: Sequence[float]) -> float:
    return float(np.sum((np.asarray(weights) - 1 / len(weights)) ** 2))


def _copy_folder(source: Path, destination: Path) -> None:
    """Hard links where the filesystem allows (no extra disk for large weights), copies otherwise."""

    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, destination, copy_function=link_or_copy)


def save_ensemble(
    out_dir: str | Path, members: dict[str, str | Path], choice: EnsembleChoice, labels: LabelSpace
) -> Path:
    """Write a self-contained ensemble folder: each member copied in under its name, and the config."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, source in members.items():
        if (out_dir / name).exists():
            shutil.rmtree(out_dir / name)
        _copy_folder(Path(source), out_dir / name)
    config = {
        "model_type": MODEL_TYPE,
        "targets": list(labels.targets),
        "polarities": list(labels.polarities),
        "members": [{"path": name, "weight": w} for name, w in zip(members, choice.weights, strict=True)],
        "none_offset": choice.none_offset,
        "dev_macro_f_avg": choice.dev_macro_f_avg,
        "dev_macro_f_avg_by_weights": {str(k): v for k, v in choice.grid.items()},
        "selected_on": choice.selected_on,
        "dev_sentences": choice.dev_sentences,
        "dev_noise": choice.noise,
    }
    tmp = out_dir / (ENSEMBLE_CONFIG + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / ENSEMBLE_CONFIG)
    return out_dir


def check_selection(
    n_members: int, weights: str | Sequence[float] = "dev", select_on: str = "realistic"
) -> list | None:
    """Refuse selection options that cannot work (exit 2); the fixed weights, or None to search them on dev.
    Training calls it before any model is trained, `fit_ensemble` again when it runs."""
    if select_on not in ("realistic", "all"):
        raise UserError(f"ensemble_selection.select_on must be 'realistic' or 'all', got {select_on!r}", exit_code=2)
    return _fixed_weights(weights, n_members)


def _fixed_weights(weights: str | Sequence[float], n_members: int) -> list[float] | None:
    if weights == "dev":
        return None
    if weights == "equal":
        return [1 / n_members] * n_members
    if isinstance(weights, str) or len(weights) != n_members:
        raise UserError(
            f"ensemble_selection.weights must be 'dev', 'equal' or {n_members} numbers (one per member), "
            f"got {weights!r}",
            exit_code=2,
        )
    values = [float(w) for w in weights]
    if not all(np.isfinite(v) and v >= 0 for v in values) or not np.isclose(sum(values), 1.0):
        raise UserError(f"ensemble_selection.weights must be finite, >= 0 and sum to 1, got {values}", exit_code=2)
    return values


def fixed_ensemble(
    member_probs: Sequence[np.ndarray],
    dev_rows: np.ndarray,
    labels: LabelSpace,
    weights: Sequence[float],
    none_offset_grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
) -> EnsembleChoice:
    """Given weights (a prior); only the `none` offsets are chosen on dev. The dev grid is still recorded."""
    grid = {_key(w): round(_macro(combine(member_probs, w), dev_rows, labels), 4) for w in weight_grid(len(weights))}
    probs = combine(member_probs, weights)
    offsets, _ = choose_none_offsets(probs, dev_rows, labels, none_offset_grid)
    score = _macro(apply_none_offset(probs, labels.polarities, offsets), dev_rows, labels)
    return EnsembleChoice(list(weights), offsets, round(score, 4), grid, dev_sentences=len(dev_rows))


def realistic_rows(slices: Sequence[str], min_sentences: int) -> np.ndarray | None:
    """Indices of dev's realistic sentences (news register, annotated, seed) when there are enough."""
    idx = np.flatnonzero(np.isin(np.asarray(slices), REALISTIC_SLICES))
    return idx if len(idx) >= min_sentences else None


def fit_ensemble(
    members: dict[str, str | Path],
    data,
    out_dir: str | Path,
    select_on: str = "realistic",
    min_sentences: int = 100,
    step: float = 0.1,
    prefer_even_within_noise: bool = True,
    weights: str | Sequence[float] = "dev",
) -> EnsembleChoice:
    """Choose the members' weights and `none` offsets on dev and save the ensemble folder.

    `select_on=realistic` chooses on dev's news-register, annotated and seed sentences when there are
    at least `min_sentences` of them (they read like the real news the model is used on; the composed
    rest favours members that fit composed wording), on all of dev otherwise; `select_on=all` uses all.
    `weights`: `dev` searches them there; `equal` (or a list, one weight per member) fixes them as a prior
    and dev chooses only the `none` offsets."""
    fixed = check_selection(len(members), weights, select_on)
    dev = data.split("dev")
    predictors = [load_predictor(path) for path in members.values()]
    labels = predictors[0].labels
    rows = align_references(dev, data.labels, labels)
    probs = [p.predict_proba(dev["text"]) for p in predictors]
    subset = None
    if select_on == "realistic" and "slice" in dev.column_names:
        subset = realistic_rows(dev["slice"], min_sentences)
    if subset is not None:
        probs, rows = [p[subset] for p in probs], rows[subset]
    if fixed is None:
        choice = choose_ensemble(probs, rows, labels, step=step, prefer_even_within_noise=prefer_even_within_noise)
    else:
        choice = fixed_ensemble(probs, rows, labels, fixed)
    choice.members = list(members)
    choice.selected_on = "dev (" + "/".join(REALISTIC_SLICES) + " slices)" if subset is not None else "dev (all)"
    save_ensemble(out_dir, members, choice, labels)
    return choice
