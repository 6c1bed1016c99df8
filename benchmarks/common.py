"""Helpers for the timing scripts: medians of repeated runs of real commands."""

from __future__ import annotations

import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def median_time(func, repeats=3):
    """Median wall time of ``func()`` over ``repeats`` runs, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def run_cli(script, *args):
    """Run a project script as a user would (new interpreter), failing loudly."""
    result = subprocess.run([sys.executable, str(ROOT / script), *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if result.returncode:
        raise SystemExit(f"{script} failed ({result.returncode}): {result.stderr.strip()}")


def report(name, fast, naive, naive_note=""):
    note = f" ({naive_note})" if naive_note else ""
    print(f"{name}: neuron3d {fast:.2f} s, naive reference {naive:.1f} s{note}, "
          f"speed-up x{naive / fast:.0f}")


def import_profile(script, *args):
    """Run a project script under ``python -X importtime``: (modules imported, seconds of
    top-level imports), a measure of start-up that load on the machine barely changes."""
    result = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / script),
                             *map(str, args)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    if result.returncode:
        raise SystemExit(f"{script} failed ({result.returncode}): {result.stderr.strip()}")
    rows = [re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)\S", line)
            for line in result.stderr.splitlines()]
    rows = [row for row in rows if row]
    return len(rows), sum(int(r.group(1)) for r in rows if len(r.group(2)) == 1) / 1e6
