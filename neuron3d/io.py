"""Stack input/output: one place for reading and writing image stacks.

A *stack* is a numpy array in (z, y, x) order, optionally with a trailing
channel axis.  It lives on disk either as one multi-page TIFF file or as a
folder of *slice files* named by their slice number (``00.png``, ``01.png``,
... or the image-translation trainer's ``00-outputs.png``).  Slice files are
always ordered by their number, never by directory-listing order.

Every writer is atomic: data goes to a hidden temporary name beside the target
and is renamed into place only when complete, so a failed run leaves nothing
half-written behind (:func:`write_file`, :func:`write_tif`, :func:`write_image`
for files; :func:`write_folder`, :func:`write_slices` for folders).  Temporaries
that a killed writer left are removed by the next write of the same target.
Written files get mode 0666 and folders 0777, less the umask, like any file the
user creates.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
#: Files that hold one image, by suffix (compared case-insensitively).
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
#: Slice files: a number, optionally the trainer's "-outputs" tag, an image suffix.
SLICE_PATTERN = re.compile(
    r"^(\d+)(?:-outputs)?\.(" + "|".join(s[1:] for s in IMAGE_SUFFIXES) + r")$", re.IGNORECASE)
_WORKERS = min(8, os.cpu_count() or 1)


def natural_key(path):
    """Sort key that orders embedded numbers numerically (``a2.png`` before ``a10.png``)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", Path(path).name)]


def list_slice_files(folder, pattern=SLICE_PATTERN, what="input folder"):
    """Return the image files of ``folder`` in slice order, never in listing order.

    Parameters
    ----------
    folder : str or Path
        Folder holding the images.
    pattern : re.Pattern or None
        Regular expression whose first group is the slice number; files that
        do not match are ignored and the rest are ordered by that number (the
        default takes ``00.png, 01.png, ...`` and the trainer's
        ``00-outputs.png, ...``).  ``None`` takes every file with an image
        suffix (:data:`IMAGE_SUFFIXES`) in natural order: embedded numbers
        compare numerically, so ``a2.png`` comes before ``a10.png``.
    what : str
        How the folder is named in error messages (e.g. ``"--input_dir"``).

    Returns
    -------
    list of Path
        The files, in increasing numeric (or natural) order.

    Raises
    ------
    FileNotFoundError
        If ``folder`` does not exist.
    ValueError
        If it is a file, holds no matching files, or two files carry the same
        number.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"{what} does not exist: {folder}")
    if not folder.is_dir():
        raise ValueError(f"{what} must be a folder of images, got a file: {folder}")
    if pattern is None:
        files = [p for p in folder.iterdir()
                 if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not files:
            kinds = ", ".join(s[1:] for s in IMAGE_SUFFIXES)
            raise ValueError(f"{what} holds no images ({kinds}): {folder}")
        return sorted(files, key=lambda p: (natural_key(p), p.name))
    numbered = {}
    for entry in folder.iterdir():
        match = pattern.match(entry.name)
        if not match or not entry.is_file():
            continue
        number = int(match.group(1))
        if number in numbered:
            raise ValueError(
                f"two slice files carry number {number} in {folder}: "
                f"{numbered[number].name} and {entry.name}"
            )
        numbered[number] = entry
    if not numbered:
        raise ValueError(
            f"no slice files (00.png, 01.png, ... or 00-outputs.png, ...) in {what} {folder}"
        )
    return [numbered[k] for k in sorted(numbered)]


def _read_image(path):
    path = Path(path)
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            return tifffile.imread(path)
        from PIL import Image

        with Image.open(path) as image:
            if image.mode == "P":
                image = image.convert("RGBA" if "transparency" in image.info else "RGB")
            return np.asarray(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise ValueError(f"cannot read image file {path}: {exc}") from None


def _select_channel(array, channel, source):
    if channel is None or array.ndim != 4 or array.shape[-1] not in (2, 3, 4):
        return array
    if channel >= array.shape[-1]:
        raise ValueError(
            f"channel {channel} requested but {source} has {array.shape[-1]} channels"
        )
    return array[..., channel]


def read_stack(path, channel=None):
    """Read a stack from a TIFF file or from a folder of numbered slice files.

    Parameters
    ----------
    path : str or Path
        A ``.tif``/``.tiff`` file holding a (z, y, x) or (z, y, x, c) stack, a
        ``.zarr`` store (see :mod:`neuron3d.zarrio`), or a folder of slice files
        (see :func:`list_slice_files`).
    channel : int or None
        If given and the images have a trailing channel axis (2-4 channels), keep
        only that channel, giving a (z, y, x) stack.

    Returns
    -------
    numpy.ndarray
        Shape (z, y, x) or (z, y, x, c), the dtype stored on disk.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a stack (e.g. a single 2-D image), cannot be decoded,
        or slice files differ in size.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input does not exist: {path}")
    from .zarrio import is_zarr, read_zarr

    if is_zarr(path):
        stack = read_zarr(path)
    elif path.is_dir():
        files = list_slice_files(path)
        with ThreadPoolExecutor(_WORKERS) as pool:
            images = list(pool.map(_read_image, files))
        first = images[0]
        for file, image in zip(files, images):
            if image.shape != first.shape:
                raise ValueError(
                    f"slice files differ in size: {files[0]} is {first.shape}, "
                    f"{file} is {image.shape}"
                )
        if first.ndim not in (2, 3):
            raise ValueError(f"slice file {files[0]} is not a 2-D image (shape {first.shape})")
        stack = np.stack(images)
    else:
        if path.suffix.lower() not in TIFF_SUFFIXES:
            raise ValueError(f"expected a .tif stack or a folder of slice files, got {path}")
        stack = _read_image(path)
        if stack.ndim == 2:
            raise ValueError(
                f"stack must be 3-D (z, y, x), got a 2-D image of shape {stack.shape} from {path}"
            )
        if stack.ndim not in (3, 4):
            raise ValueError(f"stack must be 3-D (z, y, x), got shape {stack.shape} from {path}")
    return _select_channel(stack, channel, path)


# Temporaries are hidden siblings of their target, ".<name>.<pid>-<hex>.part[<suffix>]",
# created with mode 0666 (files) or 0777 (folders) so that the umask applies as it does
# to any file the user creates.  The writer's process id lets a later write of the same
# target remove what a killed writer left behind without touching a live writer's files.
_TEMP_REST = re.compile(r"^(?:(\d+)-[0-9a-f]{8}|[A-Za-z0-9_]{8})\.part")


def _temp_path(target, suffix=""):
    return target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.part{suffix}"


def _new_temp_file(target, suffix=""):
    while True:
        path = _temp_path(target, suffix)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        return path


def _new_temp_dir(target):
    while True:
        path = _temp_path(target)
        try:
            path.mkdir(mode=0o777)
        except FileExistsError:  # pragma: no cover
            continue
        return path


def _process_alive(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # it exists but belongs to someone else
        return True
    return True


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


def _write_atomically(path, write, suffix="", expected="a file"):
    """Call ``write(temporary_path)`` beside ``path``, then rename it into place."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"output path is an existing folder, expected {expected}: {path}")
    created = _make_parents(path.parent)
    remove_stale_temporaries(path)
    tmp = _new_temp_file(path, suffix)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        _remove_if_empty(created)
        raise
    return path


def write_tif(path, stack):
    """Write ``stack`` to the TIFF file ``path`` atomically.

    The parent folder is created if needed.  The data are written to a
    temporary file beside ``path`` and renamed into place when complete; the
    file's mode is 0666 less the umask.

    Raises
    ------
    ValueError
        If ``path`` is an existing folder or its parent is an existing file.
    """
    import tifffile

    def write(tmp):
        tifffile.imwrite(tmp, np.ascontiguousarray(stack), photometric="minisblack")

    return _write_atomically(path, write, ".tif", "a .tif file")


def write_file(path, data):
    """Write text (UTF-8) or bytes to ``path`` atomically, like :func:`write_tif`."""
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    return _write_atomically(path, lambda tmp: tmp.write_bytes(payload))


def write_image(path, image):
    """Write one (y, x) or (y, x, 3|4) image atomically, like :func:`write_tif`.

    The format follows the suffix of ``path`` (``.png``, ``.tif``, ``.jpg``, ...).
    """
    path = Path(path)
    return _write_atomically(path, lambda tmp: _write_image(tmp, np.asarray(image)),
                             path.suffix, "an image file")


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
    tmp = _new_temp_dir(target)
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


def slice_names(count, suffix=".png"):
    """Names ``00.png, 01.png, ...`` zero-padded to at least two digits."""
    width = max(2, len(str(max(count - 1, 0))))
    return [f"{z:0{width}d}{suffix}" for z in range(count)]


def _write_image(path, image):
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        tifffile.imwrite(path, image)
    else:
        from PIL import Image

        Image.fromarray(image).save(path, compress_level=1)


def write_slices(folder, stack, suffix=".png"):
    """Write each z-slice of ``stack`` as a numbered image file in ``folder``, atomically.

    Parameters
    ----------
    folder : str or Path
        Output folder, created if missing.  Numbered slice files already in it
        (from an earlier run) are replaced, so no stale slice survives; other
        files are kept.  Nothing is written if writing any slice fails (see
        :func:`write_folder`).
    stack : numpy.ndarray
        (z, y, x) or (z, y, x, 3|4), dtype uint8 (or uint16 / bool for gray).
    suffix : str
        ``.png`` (default) or ``.tif``.

    Returns
    -------
    list of Path
        The files written, in slice order.

    Raises
    ------
    ValueError
        If ``folder`` is an existing file or the dtype cannot be stored as PNG.
    """
    folder = Path(folder)
    stack = np.asarray(stack)
    if stack.dtype == bool:
        stack = stack.astype(np.uint8) * 255
    if suffix == ".png" and stack.dtype not in (np.uint8, np.uint16):
        raise ValueError(
            f"PNG slices hold uint8 or uint16 images, got {stack.dtype} for {folder}"
        )
    names = slice_names(len(stack), suffix)

    def fill(tmp):
        with ThreadPoolExecutor(_WORKERS) as pool:
            list(pool.map(_write_image, [tmp / n for n in names], stack))

    write_folder(folder, fill, owned=lambda name: SLICE_PATTERN.match(name) is not None)
    return [folder / n for n in names]


def as_label_stack(array, source, allow_integral_float=False):
    """Validate a label stack and return it with a non-negative integer dtype.

    Parameters
    ----------
    array : numpy.ndarray
        Candidate (z, y, x) label stack.
    source : str or Path
        Where it came from, for error messages.
    allow_integral_float : bool
        Accept a float stack whose values are all whole numbers (converted to
        the smallest unsigned integer type that holds them).

    Returns
    -------
    numpy.ndarray
        The labels, unsigned integer dtype (signed input without negative
        values is reinterpreted as unsigned of the same size; bool becomes uint8).

    Raises
    ------
    ValueError
        If not 3-D, floating point (with fractional values when allowed), or negative.
    """
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(
            f"label stack must be 3-D (z, y, x), got shape {array.shape} from {source}"
        )
    if array.dtype == bool:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not allow_integral_float:
            raise ValueError(
                f"label stack must have an integer dtype, got {array.dtype} from {source}"
            )
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ValueError(
                f"label stack has fractional or non-finite values ({array.dtype}) in {source}; "
                "expected integer IDs"
            )
        if array.size and array.min() < 0:
            raise ValueError(f"label stack has negative values (min {array.min():g}) in {source}")
        top = int(array.max()) if array.size else 0
        return array.astype(smallest_uint(top))
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"label stack must have an integer dtype, got {array.dtype} from {source}")
    if np.issubdtype(array.dtype, np.signedinteger):
        if array.size and array.min() < 0:
            raise ValueError(f"label stack has negative values (min {array.min()}) in {source}")
        array = array.view(np.dtype(f"u{array.dtype.itemsize}"))
    return array


def smallest_uint(max_value):
    """Smallest unsigned integer dtype that holds ``max_value``."""
    for dtype in (np.uint8, np.uint16, np.uint32, np.uint64):
        if max_value <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"label {max_value} does not fit in uint64")


def read_labels(path, allow_integral_float=False):
    """Read and validate a (z, y, x) label stack; see :func:`as_label_stack`."""
    return as_label_stack(read_stack(path), path, allow_integral_float)


def read_binary(path, threshold=127):
    """Read a stack of images (first channel) as foreground ``value >= threshold``."""
    stack = read_stack(path, channel=0)
    if stack.ndim != 3:
        raise ValueError(f"expected gray or colour images, got shape {stack.shape} from {path}")
    return stack >= threshold
