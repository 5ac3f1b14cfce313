"""The label space: which targets, which polarities, and how they map to model labels.

Targets and polarities always come from a schema file or a dataset config; the model
head has one label per (target, polarity) pair, named `target=polarity`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

LABEL_SEPARATOR = "="
IGNORE_INDEX = -100  # a target the record does not annotate: masked out of the loss


@dataclass(frozen=True)
class Target:
    name: str
    name_en: str = ""
    name_ar: str = ""
    favor: str = ""
    against: str = ""


@dataclass(frozen=True)
class LabelSpace:
    targets: tuple[str, ...]
    polarities: tuple[str, ...]
    version: str = ""
    descriptions: dict[str, Target] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self):
        for kind, names in (("target", self.targets), ("polarity", self.polarities)):
            if not names:
                raise ValueError(f"a label space needs at least one {kind}")
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {kind} names: {list(names)}")
            bad = [n for n in names if LABEL_SEPARATOR in n or not n.strip()]
            if bad:
                raise ValueError(f"{kind} names must be non-empty and free of '{LABEL_SEPARATOR}': {bad}")

    @property
    def num_labels(self) -> int:
        return len(self.targets) * len(self.polarities)

    @property
    def id2label(self) -> dict[int, str]:
        return {
            t * len(self.polarities) + p: f"{target}{LABEL_SEPARATOR}{polarity}"
            for t, target in enumerate(self.targets)
            for p, polarity in enumerate(self.polarities)
        }

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in self.id2label.items()}

    def encode(self, stances: dict[str, str | None]) -> list[int]:
        """Polarity index per target; IGNORE_INDEX where the target is not annotated."""
        return [
            IGNORE_INDEX if stances.get(target) is None else self.polarities.index(stances[target])
            for target in self.targets
        ]

    @classmethod
    def from_id2label(cls, id2label: dict) -> LabelSpace:
        """Recover the label space from a saved model's `id2label` (target=polarity)."""
        labels = [id2label[k] for k in sorted(id2label, key=int)]
        if not all(LABEL_SEPARATOR in label for label in labels):
            raise ValueError(f"id2label entries must look like 'target{LABEL_SEPARATOR}polarity', got {labels[:4]}")
        pairs = [label.split(LABEL_SEPARATOR, 1) for label in labels]
        targets = tuple(dict.fromkeys(t for t, _ in pairs))
        polarities = tuple(dict.fromkeys(p for _, p in pairs))
        space = cls(targets, polarities)
        if [space.id2label[i] for i in range(space.num_labels)] != labels:
            raise ValueError("id2label is not laid out target-major (target=polarity for every pair, in order)")
        return space

    @classmethod
    def load(cls, path: str | Path) -> LabelSpace:
        path = Path(path)
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or "targets" not in data or "polarities" not in data:
            raise ValueError(f"{path}: a schema needs 'targets' and 'polarities'")
        targets = data["targets"]
        if isinstance(targets, list):
            targets = {name: {} for name in targets}
        descriptions = {name: Target(name=name, **(info or {})) for name, info in targets.items()}
        return cls(tuple(targets), tuple(data["polarities"]), str(data.get("version", "")), descriptions)
