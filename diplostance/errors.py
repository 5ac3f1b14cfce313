"""User errors and how entry points report them.

A user error (a config, a data file, a model folder, a full or read-only disk) ends a run
with a message that names the file, key or rule, never with a traceback. Exit status:
1 for bad data (the input's content breaks a rule), 2 when the run cannot start (a
missing or unusable file, folder or option). Anything else is a bug and keeps its
traceback. `--verbose` on the command line or DIPLOSTANCE_DEBUG=1 shows the traceback
of a user error too, for debugging.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import traceback
from collections.abc import Iterator

DEBUG_ENV = "DIPLOSTANCE_DEBUG"
VERBOSE_FLAG = "--verbose"
EXIT_BAD_DATA = 1
EXIT_CANNOT_START = 2
# Errors of the machine rather than of the program: the message is enough to act on.
ENVIRONMENT_ERRNOS = frozenset(
    {
        *(errno.EACCES, errno.EPERM, errno.EROFS),  # read-only
        *(errno.ENOSPC, errno.EDQUOT, errno.EFBIG),  # full
        *(errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ELOOP, errno.ENAMETOOLONG),  # a bad path
    }
)


class UserError(Exception):
    """A problem in the user's input; the message names the file, key or rule.

    `exit_code` is 2 (the run cannot start) unless a subclass is about the data's content (1).
    """

    exit_code = EXIT_CANNOT_START

    def __init__(self, *args, exit_code: int | None = None):
        super().__init__(*args)
        if exit_code is not None:
            self.exit_code = exit_code


class BadDataError(UserError):
    """The content of an input file breaks a rule (exit status 1)."""

    exit_code = EXIT_BAD_DATA


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def take_verbose_flag(argv: list[str]) -> list[str]:
    """argv without `--verbose`; when it was there, DIPLOSTANCE_DEBUG=1 (Hydra would refuse the flag)."""
    if VERBOSE_FLAG in argv:
        os.environ[DEBUG_ENV] = "1"
    return [arg for arg in argv if arg != VERBOSE_FLAG]


def _message(error: BaseException) -> tuple[str, int] | None:
    """The one-line report and exit status of a user error; None for a bug."""
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(error, UserError):
        return str(error), error.exit_code
    if isinstance(error, MissingMandatoryValue):
        key = error.full_key or "a value"
        return f"'{key}' is required: add {key}=... to the command line", EXIT_CANNOT_START
    if isinstance(error, OSError) and error.errno in ENVIRONMENT_ERRNOS:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}", EXIT_CANNOT_START
    return None


@contextlib.contextmanager
def reported_as_user_errors() -> Iterator[None]:
    """Turn a user error raised inside into `error: MESSAGE` on stderr and its exit status."""
    try:
        yield
    except Exception as error:
        report = _message(error)
        if report is None:
            raise
        if debugging():
            traceback.print_exc()
        message, code = report
        print(f"error: {message}", file=sys.stderr)
        sys.exit(code)
