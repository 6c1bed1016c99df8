"""Progress reporting: a tqdm bar on a terminal, periodic plain lines otherwise.

One reporter, :class:`StepProgress`, serves both kinds of loop: the trainer's
steps (a line every N steps, with the losses) and plain loops over items
(:func:`progress`, a line at most every few seconds).  Plain lines carry the
position, the rate and the estimated time left, so logs and CI show how far a
long run has come.
"""

from __future__ import annotations

import math
import sys
import time

__all__ = [
    "StepProgress", "format_duration", "progress",
]


def format_duration(seconds):
    """``"42 s"``, ``"12 min 05 s"``, ``"3 h 07 min"``; ``"?"`` when not finite."""
    if not math.isfinite(seconds):
        return "?"
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class StepProgress:
    """Report a loop's position ``start .. total`` on stderr.

    On a terminal a tqdm bar is shown.  Otherwise (logs, CI) a plain line

        ``<desc>: <position>/<total> <unit>s  <postfix>  (<rate> <unit>s/s, <time> left)``

    is printed when ``position`` is a multiple of ``every_steps``, when
    ``every_seconds`` have passed since the last line, and (with
    ``final_line``) when ``position`` reaches ``total``.

    Parameters
    ----------
    total : int or None
        Last position; unknown if None (no time left is shown).
    start : int
        First position (a resumed run starts where it stopped; the rate counts
        only the positions reached in this run).
    desc : str
        Prefix of each line.
    every_steps : int or None
        Print a plain line at every multiple of this (0 or None: never).
    every_seconds : float or None
        Print a plain line when this many seconds passed since the last one.
    final_line : bool
        Print a plain line when ``total`` is reached.
    unit : str
        What one position is (``"step"``, ``"item"``).
    file : text stream or None
        Where to report (default ``sys.stderr``).
    leave : bool
        Keep the tqdm bar on screen when closed.

    Examples
    --------
    >>> with StepProgress(100, every_steps=10, desc="train") as bar:  # doctest: +SKIP
    ...     for step in range(1, 101):
    ...         bar.update(step, "loss=0.1")
    """

    def __init__(self, total=None, start=0, desc="", every_steps=None, every_seconds=None,
                 final_line=False, unit="item", file=None, leave=True):
        self.total, self.start, self.desc, self.unit = total, start, desc, unit
        self.every_steps, self.every_seconds = every_steps or 0, every_seconds
        self.final_line = final_line
        self.file = file or sys.stderr
        self.t0 = self.last = time.monotonic()
        self.bar = None
        isatty = getattr(self.file, "isatty", None)
        if isatty is not None and isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc=desc or None, unit=unit,
                            file=self.file, leave=leave)

    def rate(self, position, now=None):
        """Positions per second reached in this run so far."""
        elapsed = (now or time.monotonic()) - self.t0
        return (position - self.start) / elapsed if elapsed > 0 else 0.0

    def line(self, position, postfix="", now=None):
        """The plain progress line for ``position``."""
        rate = self.rate(position, now)
        total = "?" if self.total is None else self.total
        text = f"{self.desc}: " if self.desc else ""
        text += f"{position}/{total} {self.unit}s"
        if postfix:
            text += f"  {postfix}"
        left = ""
        if self.total is not None:
            seconds = (self.total - position) / rate if rate > 0 else math.inf
            left = f", {format_duration(seconds)} left"
        return f"{text}  ({rate:.2f} {self.unit}s/s{left})"

    def update(self, position, postfix=""):
        """Record that the loop reached ``position``; ``postfix`` is shown with it."""
        if self.bar is not None:
            self.bar.update(position - self.bar.n)
            if postfix and (not self.every_steps or position % self.every_steps == 0):
                self.bar.set_postfix_str(postfix, refresh=False)
            return
        now = time.monotonic()
        due = (
            (self.every_steps and position % self.every_steps == 0)
            or (self.every_seconds is not None and now - self.last >= self.every_seconds)
            or (self.final_line and position == self.total)
        )
        if due:
            self.last = now
            print(self.line(position, postfix, now), file=self.file, flush=True)

    def close(self):
        """Close the tqdm bar, if any."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(iterable, total=None, desc="", every=10.0, file=None):
    """Yield from ``iterable`` while reporting progress on stderr.

    On a terminal a tqdm bar is shown; otherwise (logs, CI) a plain line with
    count, rate and estimated time left is printed at most every ``every``
    seconds (see :class:`StepProgress`).
    """
    total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
    reporter = StepProgress(total, desc=desc, every_seconds=every, file=file, leave=False)
    try:
        for count, item in enumerate(iterable, 1):
            yield item
            reporter.update(count)
    finally:
        reporter.close()
