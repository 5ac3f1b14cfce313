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
        out, flag = Path(out), option.split(" ")[0]  # "--out (report.md)": one file of the folder --out
        for source in inputs:
            if same_file(out, source):
                raise OutputPathError(
                    f"{option} {out} is the input {source}; an input is never written to: choose another {flag}"
                )
        for other_option, other in checked.items():
            if same_file(out, other):
                raise OutputPathError(f"{option} and {other_option} are the same file {out}: give two different files")
        if out.is_dir():
            raise OutputPathError(f"{option} {out} is a folder: give a file name")
        if (out.exists() or out.is_symlink()) and not overwrite:
            raise OutputPathError(
                f"{option} {out} already exists: choose another {flag}, or pass {overwrite_flag} to replace it"
            )
        checked[option] = out


WORKDIR_MARKER = ".diplostance-workdir"  # a folder a benchmark made, which it may reuse and clear parts of


def _related(a: Path, b: Path) -> bool:
    """`a` is `b`, lies inside it, or holds it."""
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents or a in b.parents


def work_folder(workdir: str | Path | None, prefix: str, inputs: Iterable[str | Path] = ()) -> Path:
    """The folder a benchmark writes (and clears parts of) its own files in, checked before anything is written.

    None: a new temporary folder. A given folder must not be, hold or lie inside an input (the corpus, a
    model folder, an input file), and must be new, empty, or one a benchmark made before (it holds
    WORKDIR_MARKER): a folder of the user's own files is never written into.
    """
    import tempfile

    if workdir is None:
        folder = Path(tempfile.mkdtemp(prefix=prefix))
    else:
        folder = Path(workdir)
        for source in inputs:
            if source and Path(source).exists() and _related(folder, Path(source)):
                raise OutputPathError(
                    f"--workdir {folder} is, holds or lies inside the input {source}: choose a folder of its own"
                )
        if folder.exists() and not folder.is_dir():
            raise OutputPathError(f"--workdir {folder} is a file: give a folder")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / WORKDIR_MARKER).is_file():
            raise OutputPathError(
                f"--workdir {folder} holds files a benchmark did not write ({WORKDIR_MARKER} is missing): "
                "choose a new or empty folder"
            )
        folder.mkdir(parents=True, exist_ok=True)
    (folder / WORKDIR_MARKER).write_text(
        "a diplostance benchmark's work folder: it may reuse and replace what is here\n"
    )
    return folder
