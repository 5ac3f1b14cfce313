"""Adds stance holders to annotation records, changing nothing else.

    python tools/add_holders.py HOLDERS.tsv annotations/seeds.jsonl annotations/corpus/*.jsonl

HOLDERS.tsv: one record a line, `id<TAB>spec`; `#` starts a comment. The spec is either actor ids
separated by spaces (`RUS KGZ`, `author`, `unknown`), given to every target whose stance is not `none`,
or `target=IDS;target=IDS` for targets whose holders differ. Each named record gets
`"holders": {...}` written right after its `stances` object; every other byte of the file stays as it
was (the line is checked to parse to the old record plus `holders`). A record that already has holders
is refused unless --replace. Run `python -m diplostance validate annotations/` afterwards.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from diplostance.outputs import atomic_write_text

STANCES_RE = re.compile(r'"stances": \{[^{}]*\}')
HOLDERS_RE = re.compile(r', "holders": \{[^{}]*\}')


def read_table(path: Path) -> dict[str, str]:
    table = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        record_id, _, spec = line.partition("\t")
        if not spec.strip():
            sys.exit(f"{path}:{number}: expected `id<TAB>holders`")
        if record_id in table:
            sys.exit(f"{path}:{number}: {record_id} given twice")
        table[record_id] = spec.strip()
    return table


def holders_for(spec: str, stances: dict) -> dict:
    """The record's holders: the spec's ids for each target with a stance, in the stances' order."""
    sided = [t for t, p in stances.items() if p != "none"]
    if "=" in spec:
        given = {}
        for part in spec.split(";"):
            target, _, ids = part.partition("=")
            given[target.strip()] = ids.split()
        if set(given) != set(sided):
            raise ValueError(f"holders for {sorted(given)} but the stances are on {sided}")
        return {t: given[t] for t in sided}
    if not sided:
        raise ValueError("the record has no stance that is not none")
    return {t: spec.split() for t in sided}


def add_to_file(path: Path, table: dict[str, str], replace: bool, used: set[str]) -> int:
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    changed = 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        record = json.loads(line)
        spec = table.get(record.get("id"))
        if spec is None:
            continue
        used.add(record["id"])
        if "holders" in record:
            if not replace:
                sys.exit(f"{path}:{i + 1}: {record['id']} already has holders (use --replace)")
            line = HOLDERS_RE.sub("", line, count=1)
            del record["holders"]
        try:
            holders = holders_for(spec, record["stances"])
        except ValueError as error:
            sys.exit(f"{path}:{i + 1}: {record['id']}: {error}")
        match = STANCES_RE.search(line)
        if match is None:
            sys.exit(f'{path}:{i + 1}: no flat `"stances": {{...}}` object to put the holders after')
        insert = ', "holders": ' + json.dumps(holders, ensure_ascii=False)
        new = line[: match.end()] + insert + line[match.end() :]
        if json.loads(new) != {**record, "holders": holders}:
            sys.exit(f"{path}:{i + 1}: inserting the holders would change the record")
        lines[i] = new
        changed += 1
    if changed:
        atomic_write_text(path, "\n".join(lines))
    return changed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("table", type=Path)
    parser.add_argument("files", type=Path, nargs="+")
    parser.add_argument("--replace", action="store_true", help="replace holders a record already has")
    args = parser.parse_args()
    table = read_table(args.table)
    used: set[str] = set()
    for path in args.files:
        n = add_to_file(path, table, args.replace, used)
        print(f"{path}: holders added to {n} record(s)")
    if missing := sorted(set(table) - used):
        print(f"{len(missing)} id(s) of the table are in none of the files: {missing[:10]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
