"""The rule for every command that writes named output files (label.py's, applied to the small commands).

Before anything is read or written: an output that is one of the run's inputs (the same
path, a symlink to it or a hard link of it) is refused, so is one output named twice, a
folder given where a file is written, and an output that already exists unless the user
passed `--overwrite` (or `overwrite=true`). The outputs themselves are then written with
`diplostance.outputs.atomic_write_text`, so they appear under their names only when complete.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from diplostance.outputs import OutputPathError


def same_file(a: str | Path, b: str | Path) -> bool:
    """The same path once resolved (symlinks followed), or the same file (a hard link)."""
    a, b = Path(a), Path(b)
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_output_files(
    outputs: Mapping[str, str | Path],
    inputs: Iterable[str | Path] = (),
    overwrite: bool = False,
    overwrite_flag: str = "--overwrite",
) -> None:
    """Refuse (OutputPathError, exit 2) the outputs, named by their option (e.g. '--out'), that break the rule."""
    inputs = [Path(p) for p in inputs if p]
    checked: dict[str, Path] = {}
    for option, out in outputs.items():
        out = Path(out)
        for source in inputs:
            if same_file(out, source):
                raise OutputPathError(
                    f"{option} {out} is the input {source}; an input is never written to: choose another {option}"
                )
        for other_option, other in checked.items():
            if same_file(out, other):
                raise OutputPathError(f"{option} and {other_option} are the same file {out}: give two different files")
        if out.is_dir():
            raise OutputPathError(f"{option} {out} is a folder: give a file name")
        if (out.exists() or out.is_symlink()) and not overwrite:
            raise OutputPathError(
                f"{option} {out} already exists: choose another {option}, or pass {overwrite_flag} to replace it"
            )
        checked[option] = out
