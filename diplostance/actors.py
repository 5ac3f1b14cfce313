"""The actor inventory (`annotations/actors.yaml`): who can hold a stance.

Each actor has an id (ISO 3166-1 alpha-3 for a state), a type, an English name and its Arabic
surface forms: names, nisba adjectives (from which the article, gender and number forms are derived
here) and metonyms (capitals, seats of government, leaders). `load_inventory` reads and checks the file
(every problem with its line); `Inventory.surface_forms` lists every form with its actor, which the
holder matcher (`diplostance.holders`) searches for.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from diplostance.errors import BadDataError

ACTORS_FILE = "actors.yaml"
AUTHOR, UNKNOWN = "author", "unknown"  # holders that are not actors: the outlet's own voice, no one identifiable
SPECIAL_HOLDERS = (AUTHOR, UNKNOWN)
STATE_ID_RE = re.compile(r"^[A-Z]{3}$")
ACTOR_ID_RE = re.compile(r"^[A-Z][A-Z0-9_]*$")
ACTOR_FIELDS = {"id", "type", "en", "names", "nisba", "forms"}
ARABIC_RE = re.compile("[\u0600-\u06ff]")
# Sound-plural, dual and feminine endings added to a nisba stem (روسي -> روسية، روسيين، روسيون، روسيتين ...)
NISBA_SUFFIXES = ("", "ة", "ا", "ين", "ون", "ان", "تين", "تان")  # ا: the indefinite accusative (مصدرا أمريكيا)


class InventoryError(BadDataError, ValueError):
    """actors.yaml cannot be used (a one-line message per problem)."""


@dataclass(frozen=True)
class Actor:
    id: str
    type: str
    en: str
    names: tuple[str, ...]
    nisba: tuple[str, ...] = ()
    forms: tuple[str, ...] = ()
    line: int = 0

    @property
    def name_ar(self) -> str:
        return self.names[0]

    def surface_forms(self) -> dict[str, str]:
        """Every Arabic form of the actor -> how it was made (`name`, `nisba`, `form`)."""
        found = {name: "name" for name in self.names}
        for stem in self.nisba:
            for form in nisba_forms(stem):
                found.setdefault(form, "nisba")
        for form in self.forms:
            found.setdefault(form, "form")
        return found


@dataclass
class Inventory:
    actors: dict[str, Actor]
    types: dict[str, str]
    digest: str = ""  # SHA-256 of the file's bytes: a holder model records the inventory it was fitted with
    path: Path | None = None
    _forms: list[tuple[str, str, str]] | None = field(default=None, repr=False)

    def __contains__(self, actor_id: str) -> bool:
        return actor_id in self.actors

    def __getitem__(self, actor_id: str) -> Actor:
        return self.actors[actor_id]

    def surface_forms(self) -> list[tuple[str, str, str]]:
        """(form, actor id, kind) for every form of every actor, longest first."""
        if self._forms is None:
            rows = [(form, a.id, kind) for a in self.actors.values() for form, kind in a.surface_forms().items()]
            self._forms = sorted(rows, key=lambda row: (-len(row[0]), row[0]))
        return self._forms

    def describe(self, actor_id: str) -> dict:
        """What a labelled record says of a holder: id, names, type (`author`/`unknown` have no names)."""
        if actor_id in SPECIAL_HOLDERS:
            return {"id": actor_id, "name_en": None, "name_ar": None, "type": actor_id}
        actor = self.actors[actor_id]
        return {"id": actor.id, "name_en": actor.en, "name_ar": actor.name_ar, "type": actor.type}


def nisba_forms(stem: str) -> list[str]:
    """The forms of a nisba adjective, with and without the article; the words of a multi-word stem agree
    (كوري جنوبي -> الكوري الجنوبي، الكورية الجنوبية، ...)."""
    words = stem.split()
    forms = []
    for suffix in NISBA_SUFFIXES:
        for article in ("", "ال"):
            forms.append(" ".join(article + word + suffix for word in words))
    return forms


def _str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v.strip() for v in value)


def check_inventory(path: Path) -> tuple[Inventory | None, list[tuple[int, str, str]]]:
    """Read actors.yaml; problems as (line, rule, message). The inventory is None when the file cannot be
    read at all; otherwise it holds the usable actors (a bad entry is reported and left out)."""
    problems: list[tuple[int, str, str]] = []
    try:
        raw = path.read_bytes()
        root = yaml.compose(raw.decode("utf-8"))
    except OSError as error:
        return None, [(0, "actors-file", f"cannot read the actor inventory: {error.strerror or error}")]
    except UnicodeDecodeError as error:
        return None, [(0, "not-utf8", f"byte {raw[error.start]:#04x} at offset {error.start}")]
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", -1) + 1
        return None, [(line, "invalid-yaml", str(error).splitlines()[0])]
    data = yaml.safe_load(raw.decode("utf-8")) if root is not None else None
    if (
        not isinstance(data, dict)
        or not isinstance(data.get("types"), dict)
        or not isinstance(data.get("actors"), list)
    ):
        return None, [(1, "actors-file", "expected a mapping with `types` (type: description) and `actors` (a list)")]
    types = {str(k): str(v) for k, v in data["types"].items()}
    entries = next(v for k, v in root.value if k.value == "actors").value
    actors: dict[str, Actor] = {}
    owner: dict[str, tuple[str, int]] = {}  # surface form -> (actor id, line)
    for node, entry in zip(entries, data["actors"], strict=True):
        line = node.start_mark.line + 1

        def report(rule: str, message: str, line=line) -> None:
            problems.append((line, rule, message))

        if not isinstance(entry, dict):
            report("actor-entry", f"expected a mapping (id, type, en, names, ...), got {type(entry).__name__}")
            continue
        actor_id = entry.get("id")
        if unknown := sorted(set(entry) - ACTOR_FIELDS):
            report("actor-field", f"{actor_id}: unknown field(s) {unknown}; known: {sorted(ACTOR_FIELDS)}")
        if not isinstance(actor_id, str) or not ACTOR_ID_RE.match(actor_id):
            report("actor-id", f"id {actor_id!r} must be capitals, digits and _ (states: ISO 3166-1 alpha-3)")
            continue
        if actor_id in SPECIAL_HOLDERS or actor_id.lower() in SPECIAL_HOLDERS:
            report("actor-id", f"id {actor_id!r} is reserved for holders that are not actors")
            continue
        if actor_id in actors:
            report("duplicate-actor", f"id {actor_id} already defined at line {actors[actor_id].line}")
            continue
        kind = entry.get("type")
        if kind not in types:
            report("actor-type", f"{actor_id}: type {kind!r} is not one of {sorted(types)}")
            continue
        if kind == "state" and not STATE_ID_RE.match(actor_id):
            report("actor-id", f"{actor_id}: a state's id is its ISO 3166-1 alpha-3 code (three capitals)")
        if not isinstance(entry.get("en"), str) or not entry["en"].strip():
            report("actor-names", f"{actor_id}: `en` (the English name) is required")
        names = entry.get("names")
        if not _str_list(names) or not names:
            report("actor-names", f"{actor_id}: `names` must be a non-empty list of Arabic names")
            continue
        ok = True
        for key in ("nisba", "forms"):
            if key in entry and not _str_list(entry[key]):
                report("actor-names", f"{actor_id}: `{key}` must be a list of non-empty strings")
                ok = False
        if not ok:
            continue
        actor = Actor(
            actor_id,
            kind,
            str(entry.get("en") or actor_id),
            tuple(n.strip() for n in names),
            tuple(n.strip() for n in entry.get("nisba") or ()),
            tuple(n.strip() for n in entry.get("forms") or ()),
            line,
        )
        for form in actor.surface_forms():
            if not ARABIC_RE.search(form):
                report("actor-names", f"{actor_id}: {form!r} has no Arabic letter")
            key = fold(form)
            if key in owner and owner[key][0] != actor_id:
                other, other_line = owner[key]
                report("alias-conflict", f"{actor_id}: {form!r} is also a form of {other} (line {other_line})")
            owner.setdefault(key, (actor_id, line))
        actors[actor_id] = actor
    digest = hashlib.sha256(raw).hexdigest()
    return Inventory(actors, types, digest, path), problems


def load_inventory(path: str | Path) -> Inventory:
    """The inventory, or InventoryError listing every problem as `file:line: rule: message`."""
    path = Path(path)
    inventory, problems = check_inventory(path)
    if problems or inventory is None:
        raise InventoryError("\n".join(f"{path}:{line}: {rule}: {message}" for line, rule, message in problems))
    return inventory


def check_holders(
    holders, stances: dict, targets: tuple[str, ...], inventory: Inventory | None
) -> list[tuple[str, str]]:
    """An annotation record's `holders` against its stances: problems as (rule, message).

    {target: [actor ids] | ["author"] | ["unknown"]} for targets whose stance is not `none`; a target left
    out is not yet annotated."""
    if not isinstance(holders, dict):
        return [
            ("holders-type", f"'holders' must be an object target -> list of actor ids, got {type(holders).__name__}")
        ]
    problems = []
    for target, value in holders.items():
        if target not in targets:
            problems.append(("holder-target", f"holders: target '{target}' is not in the schema {list(targets)}"))
            continue
        if stances.get(target, "none") == "none":
            problems.append(("holder-on-none", f"holders: {target} has no stance (none or missing), so no holder"))
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            problems.append(("holder-value", f"holders: {target} must be a non-empty list of actor ids"))
            continue
        if len(set(value)) != len(value):
            problems.append(("holder-value", f"holders: {target} repeats an id: {value}"))
        special = [v for v in value if v in SPECIAL_HOLDERS]
        if special and len(value) > 1:
            problems.append(("holder-value", f"holders: {target}: {special[0]!r} stands alone, got {value}"))
        if inventory is None:
            if not special:
                problems.append(("no-inventory", f"holders: {target} names actors but there is no {ACTORS_FILE}"))
            continue
        for actor_id in value:
            if actor_id not in SPECIAL_HOLDERS and actor_id not in inventory:
                problems.append(("unknown-actor", f"holders: {target}: {actor_id!r} is not in {ACTORS_FILE}"))
    return problems


# ---------------------------------------------------------------------------- folding for matching

_FOLD = str.maketrans({"أ": "ا", "إ": "ا", "آ": "ا", "ٱ": "ا", "ى": "ي", "ة": "ه", "ؤ": "و", "ئ": "ي"})
_DROP_RE = re.compile("[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")  # diacritics, tatweel


def fold(text: str) -> str:
    """The spelling-insensitive key of an Arabic form: hamza carriers, alef maqsura and taa marbuta folded,
    diacritics and tatweel dropped, runs of spaces made one."""
    return " ".join(_DROP_RE.sub("", text).translate(_FOLD).split())


def fold_with_offsets(text: str) -> tuple[str, list[int]]:
    """fold() character by character, with the offset in `text` of every character of the result (spaces
    are kept one for one, so offsets stay exact)."""
    out, offsets = [], []
    for i, char in enumerate(text):
        if _DROP_RE.match(char):
            continue
        out.append(char.translate(_FOLD) if not char.isspace() else " ")
        offsets.append(i)
    return "".join(out), offsets
