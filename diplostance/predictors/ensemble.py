"""The ensemble kind: a weighted average of member models' probabilities, then per-target `none` offsets.

Folder (self-contained; written by `diplostance.ensemble.save_ensemble`):

    ensemble_config.json     {"model_type": "diplostance-ensemble", "targets": [...], "polarities": [...],
                              "members": [{"path": "transformer", "weight": 0.5}, {"path": "tfidf", "weight": 0.5}],
                              "none_offset": [...], ...}
    transformer/             a member model folder, copied in
    tfidf/                   another member model folder

A composite kind: `member_folders` names the members, and the registry checks and loads each
one as a model folder in its own right (with the ensemble's backend and options) and hands the
loaded members to `load`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diplostance.baseline import apply_none_offset
from diplostance.predictors.folder import ModelFolderError, finite_number, inside, predictor_token_facts
from diplostance.schema import LabelSpace

CONFIG_FILE = ENSEMBLE_CONFIG = "ensemble_config.json"
MODEL_TYPE = "diplostance-ensemble"


class EnsembleFolderError(ModelFolderError):
    """An ensemble folder whose config or members cannot be used."""


def combine(member_probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    total = float(sum(weights))
    return sum(w * p.astype(np.float64) for w, p in zip(weights, member_probs, strict=True)) / total


def read_config(model_dir: Path, config: dict) -> tuple[LabelSpace, list[Path], list[float], list[float]]:
    """Labels, member folders, weights and `none` offsets of an ensemble config, each checked."""
    path = model_dir / ENSEMBLE_CONFIG
    try:
        labels = LabelSpace(tuple(config["targets"]), tuple(config["polarities"]))
        members = config["members"]
        if not isinstance(members, list) or not members:
            raise ValueError("members must be a non-empty list")
        weights = [finite_number(m["weight"], f"member {m.get('path')!r}'s weight") for m in members]
        if any(w < 0 for w in weights) or not np.isclose(sum(weights), 1.0):  # as training checks them
            raise ValueError(f"member weights must be >= 0 and sum to 1, got {weights}")
        offsets = config.get("none_offset") or [0.0] * len(labels.targets)
        if not isinstance(offsets, list) or len(offsets) != len(labels.targets):
            raise ValueError(f"none_offset needs one value per target {list(labels.targets)}")
        offsets = [finite_number(x, f"none_offset of {t!r}") for t, x in zip(labels.targets, offsets, strict=True)]
        names = [m["path"] for m in members]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise EnsembleFolderError(f"{path}: not a usable ensemble config ({error})") from error
    folders = []
    for name in names:
        try:
            folders.append(inside(model_dir, name, "member path"))
        except ModelFolderError as error:
            raise EnsembleFolderError(f"{path}: member path {name!r} leaves the ensemble folder") from error
        if folders[-1].resolve() in [f.resolve() for f in folders[:-1]]:  # the other member would go unused
            raise EnsembleFolderError(f"{path}: the member {name!r} is listed twice; list each member folder once")
    return labels, folders, weights, offsets


def check_folder(model_dir: Path, config: dict) -> LabelSpace:
    return read_config(model_dir, config)[0]


def member_folders(model_dir: Path, config: dict) -> list[Path]:
    return read_config(model_dir, config)[1]


def check_options(**options) -> None:
    """Nothing of the ensemble's own: the registry checks the options against each member."""


def check_member_labels(member_dir: Path, member_labels: LabelSpace, labels: LabelSpace) -> None:
    if member_labels != labels:
        raise EnsembleFolderError(
            f"{member_dir}: its labels {member_labels.id2label} differ from the ensemble's {labels.id2label}"
        )


class EnsemblePredictor:
    """Weighted average of the members' probabilities, then the `none` offsets."""

    def __init__(self, labels: LabelSpace, members: Sequence, weights: Sequence[float], none_offset: Sequence[float]):
        self.labels, self.members = labels, list(members)
        self.weights, self.none_offset = list(weights), list(none_offset)
        self.normalization = self.members[0].normalization  # members normalise for themselves

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        probs = combine([m.predict_proba(texts) for m in self.members], self.weights)
        return apply_none_offset(probs, self.labels.polarities, self.none_offset).astype(np.float32)

    def exact_proba(self, texts: Sequence[str]) -> np.ndarray:
        """predict_proba with each member that runs an approximation (an ONNX int8 encoder) run exactly: the
        second pass of the int8 cascade (predictors.onnx.CascadePredictor)."""
        exact = [m.exact_proba if getattr(m, "approximate", False) else m.predict_proba for m in self.members]
        probs = combine([f(texts) for f in exact], self.weights)
        return apply_none_offset(probs, self.labels.polarities, self.none_offset).astype(np.float32)

    def token_facts(self, texts: Sequence[str]) -> np.ndarray | None:
        """The members' word pieces and unknown pieces added up; a text counts as cut when a member cuts it
        (None when no member reads word pieces: tf-idf alone)."""
        facts = [f for f in (predictor_token_facts(m, texts) for m in self.members) if f is not None]
        if not facts:
            return None
        out = np.sum(facts, axis=0)
        out[:, 2] = np.max([f[:, 2] for f in facts], axis=0)
        return out


def load(model_dir: Path, config: dict, members: Sequence, **options) -> EnsemblePredictor:
    labels, folders, weights, offsets = read_config(model_dir, config)
    for folder, member in zip(folders, members, strict=True):
        check_member_labels(folder, member.labels, labels)
    predictor = EnsemblePredictor(labels, members, weights, offsets)
    predictor.member_names = [folder.name for folder in folders]  # what the one-line backend report names
    return predictor
