"""Helpers shared by the command-line scripts: one-line errors, exit status 2."""

from __future__ import annotations

import argparse
import sys

#: Exceptions that mean "the user gave bad input", reported without a traceback.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError,
               IsADirectoryError, PermissionError)


class ArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose errors are one line on stderr, exit 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


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
