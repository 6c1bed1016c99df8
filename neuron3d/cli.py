"""Helpers shared by the command-line scripts: one-line errors, exit status 2."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = [
    "USER_ERRORS", "ArgumentParser", "check_name", "check_output_dir", "check_output_file",
    "run_cli",
]

#: Exceptions that mean "the user gave bad input", reported without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError)


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are one line on stderr, exit 2.

    Parameters
    ----------
    either_spelling : bool
        Accept every long flag with dashes or underscores between its words
        (``--bind-address`` and ``--bind_address`` are the same flag).  Only the
        spelling given to ``add_argument`` is shown in ``--help``; a note in the
        help's epilog says the other one works too.
    *args, **kwargs
        As for ``argparse.ArgumentParser``.
    """

    def __init__(self, *args, either_spelling=False, **kwargs):
        if either_spelling:
            note = ("Every flag may be written as shown, with underscores between words,\n"
                    "or with dashes (--some_flag or --some-flag).")
            kwargs["epilog"] = f"{kwargs['epilog']}\n\n{note}" if kwargs.get("epilog") else note
        super().__init__(*args, **kwargs)
        self.either_spelling = either_spelling

    def _respell(self, token):
        """``token`` with the spelling of a known long flag, if it names one."""
        flag, eq, value = token.partition("=")
        if flag in self._option_string_actions:
            return token
        for candidate in (flag.replace("-", "_"), "--" + flag[2:].replace("_", "-")):
            if candidate in self._option_string_actions:
                return candidate + eq + value
        # An abbreviation: argparse matches prefixes of the spelling used by add_argument.
        for known in self._option_string_actions:
            if known.startswith("--") and known.replace("-", "_").startswith(
                    flag.replace("-", "_")):
                return known[:len(flag)] + eq + value
        return token

    def parse_known_args(self, args=None, namespace=None):
        if self.either_spelling:
            args = list(sys.argv[1:] if args is None else args)
            end = args.index("--") if "--" in args else len(args)
            args[:end] = [self._respell(a) if a.startswith("--") and len(a) > 2 else a
                          for a in args[:end]]
        return super().parse_known_args(args, namespace)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def check_name(name, flag="--name"):
    """Check a file name given without folder or suffix (e.g. ``--name experiment_8``).

    Parameters
    ----------
    name : str
        The name; the caller appends ``.tif`` (or similar).
    flag : str
        The option that gave it, for the message.

    Returns
    -------
    str
        ``name`` unchanged.

    Raises
    ------
    ValueError
        If the name is empty, starts with ``.`` (a hidden file), or contains a
        path separator or a NUL character; the message names ``flag`` and the value.
    """
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if not name or not name.strip():
        raise ValueError(f"{flag} must be a file name, got {name!r}")
    if name.startswith("."):
        raise ValueError(f"{flag} must not start with '.' (a hidden file), got {name!r}")
    if any(sep in name for sep in separators) or "\0" in name:
        raise ValueError(f"{flag} must be a plain file name without a folder, got {name!r}; "
                         "put the folder in --output_dir")
    return name


def check_output_dir(folder, flag="--output_dir"):
    """Refuse an output folder that is an existing file, before any work is done.

    Nothing is created: writers create the folder when they write the first
    complete output, so a failed run leaves no empty folder behind.

    Raises
    ------
    ValueError
        If ``folder`` exists and is not a directory (the message names ``flag``).
    """
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{flag} is an existing file, expected a folder: {folder}")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{flag} lies under an existing file {parent}: {folder}")
            break
    return path


def check_output_file(path, flag, expected="a file"):
    """Refuse an output file that could not be written, before any work is done.

    Parameters
    ----------
    path : str or os.PathLike
        The file a command will write (its missing parent folders are created then).
    flag : str
        The option that named it, for the message.
    expected : str
        What it should be (``"a JSON file"``), for the message.

    Raises
    ------
    ValueError
        When ``path`` is an existing folder, or one of its parents is an existing file.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{flag} {path} is an existing folder, expected {expected}")
    nearest = next((p for p in path.parents if p.exists()), Path("."))
    if not nearest.is_dir():
        raise ValueError(f"{flag} {path} lies under an existing file {nearest}")
    return path

def run_cli(prog, body):
    """Run ``body()`` and turn user errors into one stderr line and exit status 2.

    Parameters
    ----------
    prog : str
        Program name used as the message prefix.
    body : callable
        Does the work; returns an exit status (``None`` means 0).

    Returns
    -------
    int
        0 on success, 2 on bad input, 130 on Ctrl-C.
    """
    try:
        status = body()
    except USER_ERRORS as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0 if status is None else int(status)
