"""Where runs write, and how: inputs are never written to, outputs appear only when complete.

- `atomic_write_text` / `atomic_directory`: write under a temporary name in the same folder,
  then rename, so a file or model folder exists under its final name only when complete
  (a kill or a full disk leaves at most a hidden `.tmp-*` entry, never a half-written output).
- `${run_id:}`: a Hydra resolver for run folder names, unique per process even for runs
  started in the same second (process id and a short random suffix).
- `RunFolderGuard`: a Hydra callback that runs before Hydra creates the run folder and
  refuses a folder that holds a finished run (unless `overwrite=true`), one that is or is
  inside an input (or holds one), and one that cannot be written.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from diplostance.errors import UserError

FINISHED_MARKER = "metrics.json"  # written last: a run folder holding it is a finished run
# Config keys that name files or folders a run reads.
INPUT_KEYS = ("data.directory", "data.seeds", "data.train", "data.dev", "data.test", "data.path", "model_dir")


class OutputPathError(UserError):
    """An output location that would destroy an input or a finished run, or cannot be written."""


def _run_id() -> str:
    # torchrun starts one process per rank from one launcher: the ranks share its id.
    if "LOCAL_RANK" in os.environ:
        return f"p{os.getppid()}"
    return f"{os.getpid()}{secrets.token_hex(2)}"


RUN_ID = _run_id()
UMASK = os.umask(0)
os.umask(UMASK)
if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", lambda: RUN_ID)


def user_cache_dir(name: str, env_var: str) -> Path:
    """Where derived files that are made once and reused go: $ENV_VAR, else
    $XDG_CACHE_HOME/diplostance/NAME (XDG_CACHE_HOME defaults to ~/.cache)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "diplostance" / name


# ---------------------------------------------------------------- atomic writes


def _temporary_sibling(path: Path, directory: bool) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".tmp-{path.name}-"
    if directory:
        return Path(tempfile.mkdtemp(prefix=prefix, dir=path.parent))
    handle, name = tempfile.mkstemp(prefix=prefix, dir=path.parent)
    os.close(handle)
    return Path(name)


def _usual_modes(temporary: Path) -> None:
    """Give a finished output the modes the umask gives a new file or folder (0644 / 0755 typically).

    mkstemp and mkdtemp make private entries, and so do some writers inside a folder (safetensors
    writes its files 0600): without this a model another account should read would be unreadable.
    Bits the umask allows are added, none are taken away (an executable stays executable).
    """
    entries = [temporary]
    if temporary.is_dir() and not temporary.is_symlink():
        entries += [Path(root) / name for root, dirs, files in os.walk(temporary) for name in (*dirs, *files)]
    for entry in entries:
        if entry.is_symlink():
            continue
        usual = (0o777 if entry.is_dir() else 0o666) & ~UMASK
        mode = entry.stat().st_mode & 0o7777
        if mode | usual != mode:
            os.chmod(entry, mode | usual)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@contextlib.contextmanager
def atomic_path(path: str | Path, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of `path` to write; renamed to `path` when the block ends without error.

    An existing `path` is replaced (a folder is moved aside first and deleted after the rename).
    On an error the temporary entry is removed and `path` is left as it was.
    """
    path = Path(path)
    temporary = _temporary_sibling(path, directory)
    try:
        yield temporary
        _usual_modes(temporary)
        if directory and path.exists():
            old = _temporary_sibling(path, directory=True)
            old.rmdir()
            os.replace(path, old)
            os.replace(temporary, path)
            _remove(old)
        else:
            os.replace(temporary, path)
    except OSError as error:
        _remove(temporary)
        if error.filename is None:  # a failed write names no file: name the output
            raise OSError(error.errno, error.strerror, str(path)) from error
        raise
    except BaseException:
        _remove(temporary)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_text(text, encoding="utf-8")
    return Path(path)


def atomic_directory(path: str | Path):
    """A model folder (or any folder) that appears under its name only once written in full."""
    return atomic_path(path, directory=True)


# ---------------------------------------------------------------- run folders


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def input_paths(cfg: DictConfig, keys: Iterable[str] = INPUT_KEYS) -> list[Path]:
    """The existing files and folders a run reads, resolved (symlinks followed)."""
    found = []
    for key in keys:
        value = OmegaConf.select(cfg, key, default=None)
        if isinstance(value, str) and value and Path(value).exists():
            found.append(Path(value).resolve())
    directory, seeds = OmegaConf.select(cfg, "data.directory", default=None), cfg.get("data", {}).get("seeds")
    if isinstance(directory, str) and directory and not seeds and (Path(directory).parent / "seeds").exists():
        found.append((Path(directory).parent / "seeds").resolve())  # the annotations' default seeds folder
    name_or_path = OmegaConf.select(cfg, "model.name_or_path", default=None)
    if isinstance(name_or_path, str) and Path(name_or_path).exists():
        found.append(Path(name_or_path).resolve())
    return found


def check_run_folder(run_dir: str | Path, inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse, before anything is written, a run folder that would lose an input or a finished run."""
    run_dir = Path(run_dir).resolve()
    for source in inputs:
        if _inside(run_dir, source) or _inside(source, run_dir):
            relation = "is" if run_dir == source else "is inside" if _inside(run_dir, source) else "holds"
            raise OutputPathError(
                f"{run_dir}: the run folder {relation} the input {source}; an input is never written to "
                "(choose another hydra.run.dir)"
            )
    if (run_dir / FINISHED_MARKER).exists() and not overwrite:
        raise OutputPathError(
            f"{run_dir}: holds a finished run ({FINISHED_MARKER}); choose another hydra.run.dir, "
            "or pass overwrite=true to replace it"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as error:
        raise OutputPathError(f"{run_dir}: the run folder cannot be written ({error.strerror or error})") from error


try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover - Hydra is a dependency; kept importable without it
    Callback = object


class RunFolderGuard(Callback):
    """Hydra callback (configs: hydra.callbacks.run_folder_guard): `check_run_folder` on hydra.run.dir.

    on_run_start runs before Hydra creates the folder or writes `.hydra/` into it.
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        from diplostance.errors import debugging

        try:
            run_dir = str(OmegaConf.select(config, "hydra.run.dir"))
            overwrite = bool(OmegaConf.select(config, "overwrite", default=False))
            check_run_folder(run_dir, input_paths(config), overwrite)
        except UserError as error:
            if debugging():
                raise
            print(f"error: {error}", file=sys.stderr)
            sys.exit(error.exit_code)
