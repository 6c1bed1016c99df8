"""Progress reporting: tqdm on a terminal, periodic plain lines otherwise."""

from __future__ import annotations

import sys
import time


def progress(iterable, total=None, desc="", every=10.0, file=None):
    """Yield from ``iterable`` while reporting progress on stderr.

    On a terminal a tqdm bar is shown; otherwise (logs, CI) a plain line with
    count, rate and estimated time left is printed at most every ``every`` s.
    """
    file = file or sys.stderr
    total = len(iterable) if total is None and hasattr(iterable, "__len__") else total
    if file.isatty():
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, file=file, leave=False)
        return
    start = last = time.monotonic()
    for count, item in enumerate(iterable, 1):
        yield item
        now = time.monotonic()
        if now - last >= every:
            last = now
            rate = count / (now - start)
            left = f", {(total - count) / rate:.0f} s left" if total else ""
            print(f"{desc}: {count}/{total or '?'} ({rate:.1f}/s{left})", file=file, flush=True)
