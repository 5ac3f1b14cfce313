"""Inter-annotator agreement on stance holders: the corpus's `holders` against a blind second annotation.

    python tools/holder_agreement.py annotations/agreement/holders_second.jsonl [--annotations annotations]

The second file holds one JSON object a line, `{"id": ..., "holders": {target: [ids]}}`, made without
seeing the first annotation. Every (sentence, target) pair that both annotations give holders to is
compared: exact match of the holder sets, and Cohen's kappa over holder types (the type of the first
listed holder in actors.yaml; `author` and `unknown` are types of their own), overall and per target.
A type-by-type confusion table and the disagreeing pairs (--show) follow.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from sklearn.metrics import cohen_kappa_score

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diplostance.actors import ACTORS_FILE, SPECIAL_HOLDERS, InventoryError, load_inventory
from diplostance.annotations import annotation_files

ROOT = Path(__file__).resolve().parents[1]


def fail(message: str) -> None:
    sys.exit(f"holder_agreement: {message}")


def read_objects(path: Path) -> list[tuple[int, dict]]:
    """(line number, object) for every line; a bad line ends the run naming the file, line and rule."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        fail(f"{path}: cannot read: {getattr(error, 'strerror', None) or error}")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            fail(f"{path}:{number}: blank-line: blank line in a JSON Lines file")
        try:
            data = json.loads(line)
        except json.JSONDecodeError as error:
            fail(f"{path}:{number}: invalid-json: {error}")
        if not isinstance(data, dict):
            fail(f"{path}:{number}: not-an-object: expected a JSON object, got {type(data).__name__}")
        rows.append((number, data))
    return rows


def first_annotation(directory: Path) -> dict[str, dict[str, list[str]]]:
    """id -> holders for every annotation record that has them."""
    first = {}
    for path in annotation_files(directory):
        for number, data in read_objects(path):
            if "holders" in data:
                if not isinstance(data["holders"], dict):
                    fail(f"{path}:{number}: holders-type: 'holders' must be an object (run validate)")
                first[str(data.get("id"))] = data["holders"]
    return first


def second_annotation(path: Path, first: dict, known: set[str]) -> dict[str, dict[str, list[str]]]:
    second = {}
    for number, data in read_objects(path):
        record_id, holders = data.get("id"), data.get("holders")
        where = f"{path}:{number}"
        if not isinstance(record_id, str) or not isinstance(holders, dict):
            fail(f"{where}: second-record: expected {{'id': str, 'holders': {{target: [ids]}}}}")
        if record_id in second:
            fail(f"{where}: duplicate-id: {record_id} given twice")
        if record_id not in first:
            fail(f"{where}: unknown-id: {record_id} has no holders in the first annotation")
        for target, ids in holders.items():
            if target not in first[record_id]:
                fail(f"{where}: holder-target: {record_id} has no first-annotation holder for {target}")
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                fail(f"{where}: holder-value: {target} must be a non-empty list of actor ids")
            if unknown := [i for i in ids if i not in known]:
                fail(f"{where}: unknown-actor: {target}: {unknown} not in {ACTORS_FILE}")
        second[record_id] = holders
    return second


def kappa(a: list[str], b: list[str]) -> float:
    # One label on both sides leaves kappa undefined (0/0): report it as nan, not as agreement.
    return float("nan") if len(set(a) | set(b)) < 2 else cohen_kappa_score(a, b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("second", type=Path, help="the second annotation (JSON Lines: id, holders)")
    parser.add_argument("--annotations", type=Path, default=ROOT / "annotations", help="annotation folder")
    parser.add_argument("--show", action="store_true", help="list every disagreeing pair")
    args = parser.parse_args()

    try:
        inventory = load_inventory(args.annotations / ACTORS_FILE)
    except InventoryError as error:
        fail(str(error).splitlines()[0])
    except OSError as error:
        fail(f"{args.annotations / ACTORS_FILE}: cannot read: {error.strerror or error}")
    known = set(inventory.actors) | set(SPECIAL_HOLDERS)

    def type_of(ids: list[str]) -> str:
        return ids[0] if ids[0] in SPECIAL_HOLDERS else inventory[ids[0]].type

    first = first_annotation(args.annotations)
    second = second_annotation(args.second, first, known)
    pairs = [(rid, t, first[rid][t], ids) for rid, holders in second.items() for t, ids in holders.items()]
    if not pairs:
        fail(f"{args.second}: no sentence-target pair to compare")
    first_pairs = sum(len(h) for h in first.values())
    print(
        f"{len(second)} sentences, {len(pairs)} sentence-target pairs "
        f"(the first annotation has {len(first)} sentences, {first_pairs} pairs); {args.second}"
    )
    print("| target | pairs | exact match | overlap | same type | kappa (types) |")
    print("|---|---|---|---|---|---|")
    targets = sorted({t for _, t, _, _ in pairs})
    for target in [*targets, "all"]:
        rows = [p for p in pairs if target in ("all", p[1])]
        a, b = [type_of(p[2]) for p in rows], [type_of(p[3]) for p in rows]
        exact = sum(set(p[2]) == set(p[3]) for p in rows) / len(rows)
        overlap = sum(bool(set(p[2]) & set(p[3])) for p in rows) / len(rows)
        same = sum(x == y for x, y in zip(a, b, strict=True)) / len(rows)
        print(f"| {target} | {len(rows)} | {exact:.3f} | {overlap:.3f} | {same:.3f} | {kappa(a, b):.3f} |")

    types = [*inventory.types, *SPECIAL_HOLDERS]
    confusion = Counter((type_of(p[2]), type_of(p[3])) for p in pairs)
    used = [t for t in types if any(t in key for key in confusion)]
    print("\nHolder types, first annotation (rows) by second annotation (columns):")
    print("| first \\ second | " + " | ".join(used) + " |")
    print("|---" * (len(used) + 1) + "|")
    for row in used:
        print(f"| {row} | " + " | ".join(str(confusion[(row, col)] or ".") for col in used) + " |")

    kinds = Counter()
    for _, _, a, b in pairs:
        if set(a) == set(b):
            if type_of(a) != type_of(b):  # kappa takes the first listed holder's type, so order can count
                kinds["same set, another holder listed first (its type differs)"] += 1
            continue
        if type_of(a) != type_of(b):
            kinds[f"type {type_of(a)} -> {type_of(b)}"] += 1
        elif set(a) & set(b):
            kinds["same type, sets overlap (a party more or fewer)"] += 1
        else:
            kinds["same type, different actors"] += 1
    print("\nDisagreements by kind:")
    for kind, count in kinds.most_common():
        print(f"- {kind}: {count}")
    if args.show:
        print("\nDisagreeing pairs, and equal sets whose first holders differ in type (id, target: first | second):")
        for rid, target, a, b in pairs:
            if set(a) != set(b) or type_of(a) != type_of(b):
                print(f"- {rid} {target}: {' '.join(a)} | {' '.join(b)}")


if __name__ == "__main__":
    main()
