"""Atomic writes and the output rule: the storage machinery every writer shares.

Every writer of :mod:`neuron3d.io` (TIFF, PNG slices) and :mod:`neuron3d.zarrio`
(OME-Zarr stores) goes through this module: data go to a hidden temporary name beside
the target and are renamed into place only when complete, so a failed run leaves
nothing half-written (:func:`write_file`, :func:`write_atomically` for files;
:func:`write_folder`, :func:`staging_dir` for folders and stores).  Temporaries that a
killed writer left are removed by the next write of the same target
(:func:`remove_stale_temporaries`).  Written files get mode 0666 and folders 0777,
less the umask, like any file the user creates.

:func:`check_outputs_apart` is the one rule every command applies before it reads
anything: no output may be, contain or lie inside one of its inputs.

This module imports nothing of the package, so any module may use it.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "check_outputs_apart", "new_temp_dir", "new_temp_file", "prepare_output_dir",
    "remove_stale_temporaries", "same_path", "staging_dir", "write_atomically",
    "write_file", "write_folder",
]


# Temporaries are hidden siblings of their target, ".<name>.<pid>-<hex>.part[<suffix>]",
# created with mode 0666 (files) or 0777 (folders) so that the umask applies as it does
# to any file the user creates.  The writer's process id lets a later write of the same
# target remove what a killed writer left behind without touching a live writer's files.
_TEMP_REST = re.compile(r"^(?:(\d+)-[0-9a-f]{8}|[A-Za-z0-9_]{8})\.part")


def _temp_path(target, suffix=""):
    return target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.part{suffix}"


def new_temp_file(target, suffix=""):
    """Create and return a new empty hidden temporary file beside ``target``."""
    while True:
        path = _temp_path(target, suffix)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        return path


def new_temp_dir(target):
    """Create and return a new empty hidden temporary folder beside ``target``."""
    while True:
        path = _temp_path(target)
        try:
            path.mkdir(mode=0o777)
        except FileExistsError:  # pragma: no cover
            continue
        return path


def _process_alive(pid):
    """Whether process ``pid`` still runs.  A zombie does not: a writer killed with its
    parent stays one until init reaps it (a second or more on a loaded machine, forever
    where the container's first process reaps nothing), and ``kill(pid, 0)`` succeeds on
    it."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        pass
    try:  # Linux: the state follows the command name, which may hold spaces or ")"
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (or it just went): trust kill()
    return state not in ("Z", "X")


def remove_stale_temporaries(target):
    """Remove temporaries that killed writers of ``target`` left beside it.

    A write of ``target`` goes through a hidden sibling named
    ``.<name>.<pid>-<random>.part`` (plus the target's suffix); a writer killed
    by SIGKILL or a power cut cannot remove it.  This removes such siblings,
    files or folders, whose writing process no longer exists (and the
    ``.<name>.<8 characters>.part*`` names of earlier versions).  Every atomic
    writer of this module calls it before writing, so the next write of the
    same target cleans up.

    Parameters
    ----------
    target : str or Path
        The file or folder whose temporaries are removed.

    Returns
    -------
    list of Path
        What was removed.
    """
    target = Path(target)
    prefix = f".{target.name}."
    removed = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        match = _TEMP_REST.match(entry.name[len(prefix):])
        if not match or (match.group(1) and _process_alive(int(match.group(1)))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def same_path(a, b):
    """Whether two paths name the same file or folder (resolved, or the same inode)."""
    a, b = Path(a), Path(b)
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _resolved(path):
    """``path`` made absolute with symlinks and ``..`` resolved as far as it exists."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def check_outputs_apart(inputs, outputs):
    """Refuse outputs that are, contain or lie inside one of a command's inputs.

    The one rule every command applies, before it reads anything, so that no
    output a user names can destroy an input: an output is refused if,
    after resolving ``..`` and symbolic links, it is the same file or folder as
    an input, a folder (or store) that contains an input, or a path inside an
    input folder or store (``X.zarr/mem.zarr`` for the input ``X.zarr``).

    Parameters
    ----------
    inputs, outputs : mapping of str to path, or iterable of (str, path)
        What the command reads and what it will create or replace, each keyed
        by how the user named it (a flag such as ``--input_dir``, or a
        description such as ``"output TIFF"``).  ``None`` paths are skipped.
        An output is the path that is written, not the folder it is written
        into: ``split --output_dir datasets/`` writes ``datasets/em_a.tif``
        and so on, which may well sit beside its input.

    Raises
    ------
    ValueError
        Naming the output and the input it collides with, and both paths.
    """
    inputs = list(inputs.items() if hasattr(inputs, "items") else inputs)
    outputs = list(outputs.items() if hasattr(outputs, "items") else outputs)
    for out_name, out_path in outputs:
        if out_path is None:
            continue
        out = _resolved(out_path)
        for in_name, in_path in inputs:
            if in_path is None:
                continue
            src = _resolved(in_path)
            if out == src or same_path(out_path, in_path):
                how = "is"
            elif src in out.parents:
                how = "lies inside"
            elif out in src.parents:
                how = "contains"
            else:
                continue
            raise ValueError(f"{out_name} {out_path} {how} {in_name} {in_path}: "
                             "writing it would destroy the input; choose another output")


def prepare_output_dir(folder):
    """Create ``folder`` (and parents) for outputs; refuse an existing file.

    Raises
    ------
    ValueError
        If ``folder`` exists and is not a directory.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output path is an existing file, expected a folder: {folder}")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _make_parents(folder):
    """Create ``folder`` and missing parents; return those created, deepest last."""
    folder = Path(folder)
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    prepare_output_dir(folder)
    return missing[::-1]


def _remove_if_empty(folders):
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            break


def write_atomically(path, write, suffix="", expected="a file"):
    """Call ``write(temporary_path)`` beside ``path``, then rename it into place.

    Parameters
    ----------
    path : str or Path
        The file to create or replace; missing parents are created (and removed again
        if the write fails).
    write : callable
        ``write(tmp: Path)`` writes the complete file to ``tmp``.
    suffix : str
        Suffix of the temporary name (writers that pick a format by suffix need it).
    expected : str
        What ``path`` should be, for the error message.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        If ``path`` is an existing folder or its parent is an existing file.
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output path is an existing folder, expected {expected}: {path}")
    created = _make_parents(path.parent)
    remove_stale_temporaries(path)
    tmp = new_temp_file(path, suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_if_empty(created)
        raise
    return path


def write_file(path, data):
    """Write text (UTF-8) or bytes to ``path`` atomically, like :func:`neuron3d.io.write_tif`."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return write_atomically(path, lambda tmp: tmp.write_bytes(payload))


@contextmanager
def staging_dir(target, expected="a folder"):
    """A new hidden temporary folder beside ``target``, for building it atomically.

    Refuses a ``target`` that is an existing file, creates missing parents, removes what
    killed writers of ``target`` left (:func:`remove_stale_temporaries`) and yields the
    temporary folder; the caller installs it before the ``with`` block ends.  On an
    exception the temporary folder and the parents created for it are removed.
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise ValueError(f"output path is an existing file, expected {expected}: {target}")
    created = _make_parents(target.parent)
    remove_stale_temporaries(target)
    tmp = new_temp_dir(target)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        _remove_if_empty(created)
        raise


def write_folder(folder, write, owned=None):
    """Fill ``folder`` atomically: ``write`` fills a new temporary folder, then it is installed.

    ``write(tmp)`` writes the new files into ``tmp``, a hidden folder beside
    ``folder`` (same file system).  If ``write`` raises, or the process is
    interrupted, the temporary folder is removed and ``folder`` is left as it
    was (not even created, nor its missing parents).  Once ``write`` returns:

    * if ``folder`` does not exist, the temporary folder is renamed to it (one
      atomic rename);
    * otherwise each new file is renamed over its namesake in ``folder``, then
      the entries of ``folder`` that ``owned`` claims and that were not
      rewritten are removed, so no stale output of an earlier run survives.
      Other entries are kept.  These are renames within one file system: a
      crash in the middle leaves complete files, never a partial one.

    Temporaries of a killed earlier write are removed first
    (:func:`remove_stale_temporaries`).  New folders get mode 0777 and files
    0666, less the umask.

    Parameters
    ----------
    folder : str or Path
        The output folder.
    write : callable
        ``write(tmp: Path)``; writes plain files into ``tmp``.
    owned : callable or None
        ``owned(name) -> bool`` for the names of files in ``folder`` that
        earlier runs of this writer wrote (removed when not rewritten).
        ``None``: keep every file that is not rewritten.

    Returns
    -------
    list of Path
        The files installed, sorted by name.

    Raises
    ------
    ValueError
        If ``folder`` is an existing file.
    """
    folder = Path(folder)
    with staging_dir(folder) as tmp:
        write(tmp)
        names = sorted(p.name for p in tmp.iterdir())
        if not folder.exists():
            os.rename(tmp, folder)
        else:
            for name in names:
                os.replace(tmp / name, folder / name)
            if owned is not None:
                new = set(names)
                for old in folder.iterdir():
                    if old.name not in new and owned(old.name) and old.is_file():
                        old.unlink()
            tmp.rmdir()
    return [folder / name for name in names]
