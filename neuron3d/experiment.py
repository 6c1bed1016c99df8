"""The runner of ``experiment_8.sh``: it runs the plan's steps, keyed by what they ran.

``bash experiment_8.sh [options]`` is a thin wrapper around ``python -m neuron3d.experiment``.
The run is data elsewhere: the options, networks, file names and training recipes are
:mod:`neuron3d.recipe`, the steps :func:`neuron3d.plan.plan`.  This module holds

* the **fingerprints** (:class:`Fingerprints`): content hashes of files and folders;
* the **runner** (:class:`Runner`): a step is skipped only if the same command, on inputs with
  the same content, produced outputs that are still there unchanged.  A changed option changes
  the commands of the steps it affects; those re-run, and the steps downstream of them re-run
  exactly when their inputs' content changed.  An interrupted training resumes from its last
  checkpoint;
* :func:`execute` and the command line: every option is checked, the plan is computed once,
  the folders of derived files are claimed for this run (two runs sharing one would overwrite
  each other's files: :func:`claim_folders`), then the steps run and ``report.json`` is
  written (:mod:`neuron3d.report`).

The names of :mod:`neuron3d.recipe` and :mod:`neuron3d.plan` stay importable from here.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from .cli import run_cli
from .plan import In, Out, Step, make_step, p3d, plan, step_records, volume_shape
from .recipe import (
    CALIBRATED_RECIPES,
    CHOICE_QUADRANT,
    COMBOS,
    DEMO_SHAPE,
    NETWORK_OPTIONS,
    NETWORKS,
    PROG,
    QUICK_STEPS,
    RECIPES,
    TEST_QUADRANT,
    THESIS_EPOCHS,
    THESIS_TRAIN,
    VALIDATED_NETWORKS,
    VALIDATED_RECIPES,
    Layout,
    Network,
    Options,
    build_parser,
    options_record,
    quick_crop,
    recipe_summary,
    resolve,
    runs,
    training_args,
)

__all__ = [  # the runner's own names, and the recipe's and the plan's it re-exports
    "Fingerprints", "Runner", "StepFailed", "claim_folders", "execute", "main",
    "CALIBRATED_RECIPES", "CHOICE_QUADRANT", "COMBOS", "DEMO_SHAPE", "NETWORK_OPTIONS",
    "NETWORKS", "PROG", "QUICK_STEPS", "RECIPES", "TEST_QUADRANT", "THESIS_EPOCHS",
    "THESIS_TRAIN", "VALIDATED_NETWORKS", "VALIDATED_RECIPES", "Layout", "Network", "Options",
    "build_parser", "options_record", "quick_crop", "recipe_summary", "resolve",
    "training_args", "volume_shape", "In", "Out", "Step", "make_step", "p3d", "plan",
    "step_records",
]

ROOT = Path(__file__).resolve().parents[1]


# ---- fingerprints and the runner ------------------------------------------------------------

def _is_temporary(path):
    return path.name.startswith(".") and ".part" in path.name


def _files(path):
    """The files that make up ``path`` (itself, or every file under a folder), sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file()
                  and not any(_is_temporary(part) for part in p.relative_to(path).parents)
                  and not _is_temporary(p))


class Fingerprints:
    """Content hashes of files and folders, cached by (size, mtime) across invocations."""

    def __init__(self, cache_file):
        self.cache_file = Path(cache_file)
        try:
            self.cache = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            self.cache = {}

    def file(self, path):
        stat = path.stat()
        key = str(path.absolute())
        cached = self.cache.get(key)
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return cached[2]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        self.cache[key] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
        return self.cache[key][2]

    def of(self, path):
        """sha256 of a file, or of a folder's relative names and file hashes; None if missing."""
        path = Path(path)
        if not path.exists():
            return None
        if path.is_file():
            return self.file(path)
        digest = hashlib.sha256()
        for f in _files(path):
            digest.update(f"{f.relative_to(path)}\0{self.file(f)}\n".encode())
        return "dir:" + digest.hexdigest()

    def save(self):
        from .io import write_file

        write_file(self.cache_file, json.dumps(self.cache) + "\n")


def _die_with_parent():
    """In the child: get SIGKILL when the runner dies (Linux), so no orphan keeps writing."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _remove(path):
    import shutil

    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class Runner:
    """Runs steps, skipping those whose command, inputs and outputs are as recorded.

    A record ``RUN/.steps/<name>.json`` is written after a step succeeds: its command, the
    content hash of each input and each output, and its time.  A step runs when it has no
    record, when its command or an input's content differs from the record, or when an output
    is missing or changed since.  Before it runs, its old outputs are removed, except for an
    interrupted training (same command and inputs), which resumes from its checkpoint.
    """

    def __init__(self, layout, force=False, python=None, out=None):
        self.layout = layout
        self.force = force
        self.python = python or sys.executable
        self.out = out or sys.stdout
        self.hashes = Fingerprints(layout.steps_dir / "hashes.json")
        self.ran, self.skipped = [], []

    def _record_path(self, step, kind="json"):
        return self.layout.steps_dir / f"{step.name}.{kind}"

    def _load(self, path):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def state(self, step):
        """(done, reason) of ``step`` given its record and the files on disk now."""
        inputs = {str(p): self.hashes.of(p) for p in step.inputs}
        if self.force:
            return False, "--force", inputs
        record = self._load(self._record_path(step))
        if record is None:
            return False, "not run before", inputs
        if record.get("command") != list(step.argv):
            return False, "its command changed", inputs
        for path, digest in inputs.items():
            if record.get("inputs", {}).get(path) != digest:
                return False, f"input {path} changed", inputs
        for path in step.outputs:
            if record.get("outputs", {}).get(str(path)) != self.hashes.of(path):
                return False, f"output {path} is missing or changed", inputs
        return True, "same command, same inputs", inputs

    def run(self, step, dry_run=False):
        from .io import write_file

        done, reason, inputs = self.state(step)
        if done:
            print(f"== {step.name}: done before ({reason}), skipped", file=self.out, flush=True)
            self.skipped.append(step.name)
            return
        started_file = self._record_path(step, "started")
        started = self._load(started_file)
        key = {"command": list(step.argv), "inputs": inputs}
        resumable = (step.resume is not None and not self.force and started == key
                     and any((p / "checkpoint").exists() for p in step.outputs if p.is_dir()))
        argv = step.resume if resumable else step.argv
        why = "resuming an interrupted run" if resumable else reason
        print(f"== {step.name} ({why})", file=self.out, flush=True)
        if dry_run:
            print(f"   {shlex.join(['python', *argv])}", file=self.out, flush=True)
            return
        from .io import remove_stale_temporaries

        for path in step.outputs:
            remove_stale_temporaries(path)
            if not resumable:
                _remove(path)
        self._record_path(step).unlink(missing_ok=True)
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        write_file(started_file, json.dumps(key) + "\n")
        log = self.layout.logs / f"{step.name}.log"
        start = time.monotonic()
        if argv[0] == "-m":  # a module of this package
            command = [self.python, *argv]
        else:  # a script of this repository
            command = [self.python, str(ROOT / argv[0]), *argv[1:]]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(log, "w") as handle:
            code = subprocess.call(command, stdout=handle,
                                   stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=_die_with_parent)
        seconds = round(time.monotonic() - start, 1)
        if code != 0:
            tail = "\n".join("    " + line for line in log.read_text().splitlines()[-5:])
            raise StepFailed(f"{PROG}: step '{step.name}' failed (exit {code}); its log: {log}"
                             f"\n{tail}")
        missing = [str(p) for p in step.outputs if not p.exists()]
        if missing:
            raise StepFailed(f"{PROG}: step '{step.name}' did not write {', '.join(missing)}; "
                             f"its log: {log}")
        record = {"command": list(step.argv), "inputs": inputs,
                  "outputs": {str(p): self.hashes.of(p) for p in step.outputs},
                  "seconds": seconds, "resumed": resumable,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_file(self._record_path(step), json.dumps(record, indent=1) + "\n")
        started_file.unlink(missing_ok=True)
        self.hashes.save()
        self.ran.append(step.name)

    def records(self, steps):
        """{step name: its record} for the steps that have one."""
        return step_records(self.layout, steps)


class StepFailed(RuntimeError):
    """A step exited with an error (exit status 1 of the run; the message names its log)."""


# ---- the run --------------------------------------------------------------------------------


# ---- the run --------------------------------------------------------------------------------

#: The file in a folder of derived files that names the run writing them (:func:`claim_folders`).
CLAIM = ".experiment_8_run.json"


def claim_folders(options, layout, write=True):
    """Refuse a folder of derived files that another run writes into; then claim it.

    Two runs sharing a folder of derived files (``--work``, by default the datasets folder)
    would overwrite each other's predictions, combined images and reconstructions, and each
    would then re-run the other's steps.  A folder is claimed by the first run that uses it
    (``FOLDER/.experiment_8_run.json`` names its results folder); another run is refused, unless
    the claiming run's folder no longer exists.  The datasets folder of a --demo run with its
    own --work is shared with runs that read or generate the same synthetic volume (--shape,
    --seed); a run that would generate another one there is refused.

    Parameters
    ----------
    options : neuron3d.recipe.Options
    layout : neuron3d.recipe.Layout
    write : bool
        Write the claims (False: only check, as ``--dry_run`` does).

    Raises
    ------
    ValueError
        Naming the flag, the folder and the other run.
    """
    from .io import write_file

    mine = str(Path(layout.run_dir).resolve())
    synthetic = {"shape": list(options.shape), "seed": options.seed} if options.demo else None
    folders = [("--work", layout.work, "work")]
    same = Path(layout.data).absolute() == Path(layout.work).absolute()
    if options.demo and not same:
        folders.append(("--datasets", layout.data, "data"))
    for flag, folder, role in folders:
        claim = Path(folder) / CLAIM
        try:
            record = json.loads(claim.read_text())
            other = record["run_dir"]
        except (OSError, ValueError, KeyError, TypeError):
            record, other = {}, None
        alive = other is not None and other != mine and Path(other).is_dir()
        generates = options.demo and (role == "data" or same)  # the synthetic volume goes here
        if alive and role == "work" and record.get("role") == "work":
            why = "derived files"
        elif alive and generates and record.get("synthetic") != synthetic:
            why = "data (another synthetic volume would replace it)"
        else:
            why = None
        if why:
            raise ValueError(
                f"{flag} {folder} holds the {why} of another run, {other}, which this run "
                f"({layout.run_dir}) would overwrite: give this run its own {flag} folder "
                f"(or remove {other} and {claim})")
        if write and other != mine and (not alive or role == "work"):
            Path(folder).mkdir(parents=True, exist_ok=True)
            write_file(claim, json.dumps({"run_dir": mine, "role": role,
                                          "synthetic": synthetic}) + "\n")


def execute(options):
    """Run (or with ``dry_run`` list) the whole recipe; returns the report dict (or None).

    The plan is computed once, before any step runs (:func:`neuron3d.plan.plan` is static).
    """
    layout = Layout.of(options)
    shape = volume_shape(options, layout)
    steps = plan(options, layout, shape)
    claim_folders(options, layout, write=False)
    print(f"{PROG}: data {layout.data} ({' x '.join(map(str, shape))}), derived files "
          f"{layout.work}, results {layout.run_dir}, paths {options.paths}, "
          f"{recipe_summary(options, shape)}"
          f"{', deterministic' if options.deterministic else ''}", flush=True)
    if options.work == str(Path(options.results) / options.run / "datasets") \
            and options.work != options.datasets:
        print(f"{PROG}: note: {layout.data} is read-only; derived files go to {layout.work}",
              flush=True)
    if not options.dry_run:
        claim_folders(options, layout)
    runner = Runner(layout, force=options.force)
    start = time.monotonic()
    for step in steps:
        runner.run(step, dry_run=options.dry_run)
    if options.dry_run:
        return None
    from .io import write_file
    from .report import build_report, summary_line

    write_file(layout.options_file, json.dumps(options_record(options, layout), indent=2) + "\n")
    report = build_report(layout, options_record(options, layout), steps,
                          runner.records(steps), runner.ran,
                          total_seconds=round(time.monotonic() - start, 1))
    write_file(layout.report, json.dumps(report, indent=2) + "\n")
    if runs(options.method, "thesis"):  # the thesis' evaluation block, as the thesis printed it
        print()
        print((layout.logs / f"evaluate_{'_'.join(COMBOS['thesis'][0])}.log").read_text().rstrip())
    print()
    print(summary_line(report))
    print(f"{PROG}: finished in {time.monotonic() - start:.0f} s ({len(runner.ran)} steps run, "
          f"{len(runner.skipped)} skipped); report: {layout.report}")
    return report


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        try:
            execute(resolve(args))
        except StepFailed as exc:
            print(exc, file=sys.stderr)
            return 1
        return 0

    return run_cli(PROG, body)



if __name__ == "__main__":
    raise SystemExit(main())
