"""Check that an environment holds exactly what its lock file pins.

    .venv/bin/python tools/check_lock.py requirements/project-py3.11.lock

Run with the environment's own python (standard library only). Exits 1, listing each package,
when an installed distribution is missing from the lock or has another version than the lock's
(a local version label such as torch's `+cpu` counts as the same version); the project itself
(installed editable) is skipped.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

SKIP = {"diplostance"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name)] = version.split(";", 1)[0].strip()
    return pins


def main(lock: str) -> int:
    pins = read_lock(Path(lock))
    problems = []
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        if name in SKIP:
            continue
        version = dist.version.split("+", 1)[0]
        if name not in pins:
            problems.append(f"{name}=={dist.version} is installed but not in {lock}")
        elif pins[name] != version:
            problems.append(f"{name}=={dist.version} is installed but {lock} pins {pins[name]}")
    for problem in sorted(problems):
        print(problem, file=sys.stderr)
    if problems:
        print(f"{len(problems)} package(s) differ from {lock}: see the README's 'Locked installs'", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
