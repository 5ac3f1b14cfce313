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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diplostance.baseline import apply_none_offset, choose_none_offsets
from diplostance.evaluation import align_references
from diplostance.predictors import load_predictor
from diplostance.predictors.ensemble import ENSEMBLE_CONFIG, MODEL_TYPE, EnsembleFolderError, combine
from diplostance.schema import LabelSpace
from diplostance.scoring import stance_scores

__all__ = ["ENSEMBLE_CONFIG", "MODEL_TYPE", "EnsembleChoice", "EnsembleFolderError", "choose_ensemble", "combine"]
__all__ += ["fit_ensemble", "save_ensemble"]


@dataclass
class EnsembleChoice:
    weights: list[float]
    none_offset: list[float]
    dev_macro_f_avg: float
    grid: dict  # weight of the first member -> dev macro_f_avg


def choose_ensemble(
    member_probs: Sequence[np.ndarray],
    dev_rows: np.ndarray,
    labels: LabelSpace,
    weight_grid: Sequence[float] = tuple(i / 10 for i in range(11)),
    none_offset_grid: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5),
) -> EnsembleChoice:
    """Weights for two members (w, 1 - w) and per-target `none` offsets, chosen on dev macro_f_avg."""
    if len(member_probs) != 2:
        raise ValueError("choose_ensemble searches weights for exactly two members")
    grid = {}
    for w in weight_grid:
        preds = combine(member_probs, (w, 1 - w)).argmax(-1)
        grid[float(w)] = round(stance_scores(preds, dev_rows, labels.targets, labels.polarities)["macro_f_avg"], 4)
    best = max(grid.values())
    # ties: the most even mixture, which is the least tuned to dev
    w = min((w for w, s in grid.items() if s == best), key=lambda w: abs(w - 0.5))
    probs = combine(member_probs, (w, 1 - w))
    offsets, _ = choose_none_offsets(probs, dev_rows, labels, none_offset_grid)
    preds = apply_none_offset(probs, labels.polarities, offsets).argmax(-1)
    score = stance_scores(preds, dev_rows, labels.targets, labels.polarities)["macro_f_avg"]
    return EnsembleChoice([w, 1 - w], offsets, round(float(score), 4), grid)


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
        "dev_macro_f_avg_by_first_weight": {str(k): v for k, v in choice.grid.items()},
    }
    tmp = out_dir / (ENSEMBLE_CONFIG + ".tmp")
    tmp.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / ENSEMBLE_CONFIG)
    return out_dir


def fit_ensemble(members: dict[str, str | Path], data, out_dir: str | Path) -> EnsembleChoice:
    """Choose the members' weights and `none` offsets on `data`'s dev split and save the ensemble folder."""
    dev = data.split("dev")
    predictors = [load_predictor(path) for path in members.values()]
    labels = predictors[0].labels
    rows = align_references(dev, data.labels, labels)
    choice = choose_ensemble([p.predict_proba(dev["text"]) for p in predictors], rows, labels)
    save_ensemble(out_dir, members, choice, labels)
    return choice
