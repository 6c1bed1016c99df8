"""Stack input/output: one place for reading and writing image stacks.

A *stack* is a numpy array in (z, y, x) order, optionally with a trailing
channel axis.  It lives on disk either as one multi-page TIFF file or as a
folder of *slice files* named by their slice number (``00.png``, ``01.png``,
... or the image-translation trainer's ``00-outputs.png``).  Slice files are
always ordered by their number, never by directory-listing order.

Every writer is atomic (the machinery is :mod:`neuron3d.atomic`, whose names are
importable from here too): data goes to a hidden temporary name beside the target
and is renamed into place only when complete, so a failed run leaves nothing
half-written behind (:func:`write_file`, :func:`write_tif`, :func:`write_image`
for files; :func:`write_folder`, :func:`write_slices` for folders).  One interface
for every format: :func:`read_stack` reads a TIFF, a slice folder or a ``.zarr`` store,
:func:`write_stack` writes one.  Temporaries
that a killed writer left are removed by the next write of the same target.
Written files get mode 0666 and folders 0777, less the umask, like any file the
user creates.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

# The atomic-write machinery lives in neuron3d.atomic; its names stay importable from here.
from .atomic import (  # noqa: F401  (re-exported)
    check_outputs_apart,
    prepare_output_dir,
    remove_stale_temporaries,
    same_path,
    staging_dir,
    write_atomically,
    write_file,
    write_folder,
)
from .labels import FOREGROUND, smallest_uint  # noqa: F401  (smallest_uint re-exported)

__all__ = [
    "IMAGE_SUFFIXES", "SLICE_PATTERN", "TIFF_SUFFIXES", "as_label_stack",
    "check_outputs_apart", "list_slice_files", "natural_key", "prepare_output_dir",
    "read_binary", "read_labels", "read_stack", "remove_stale_temporaries", "same_path",
    "slice_names", "smallest_uint", "staging_dir", "write_file", "write_folder", "write_image",
    "write_slices", "write_stack", "write_tif",
]

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


def read_stack(path, channel=None, what="input"):
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
    what : str
        How the stack is named in error messages (a flag such as ``--predicted``).

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
        raise FileNotFoundError(f"{what} does not exist: {path}")
    from .zarrio import is_zarr, read_zarr

    if is_zarr(path):
        stack = read_zarr(path, what)
    elif path.is_dir():
        files = list_slice_files(path, what=f"{what} folder")
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

    return write_atomically(path, write, ".tif", "a .tif file")


def write_image(path, image):
    """Write one (y, x) or (y, x, 3|4) image atomically, like :func:`write_tif`.

    The format follows the suffix of ``path`` (``.png``, ``.tif``, ``.jpg``, ...).
    """
    path = Path(path)
    return write_atomically(path, lambda tmp: _write_image(tmp, np.asarray(image)),
                             path.suffix, "an image file")


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


def write_stack(path, stack, slices=False, chunks=None, voxel_size=None, kind=None):
    """Write a stack in the format its path names: the write side of :func:`read_stack`.

    Parameters
    ----------
    path : str or Path
        ``X.zarr``: an OME-Zarr store (:func:`neuron3d.zarrio.write_zarr`); otherwise a
        ``.tif`` file (:func:`write_tif`), or with ``slices`` a folder of numbered PNG slice
        files (:func:`write_slices`).
    stack : numpy.ndarray
        (z, y, x) or (z, y, x, c); bool masks are written as uint8 0/255 (slices, zarr).
    slices : bool
        Write a folder of slice files for a path that is not a .zarr store.
    chunks : tuple of 3 int or None
        Chunk shape of a zarr store (ignored by the other formats; the CLIs refuse it there).
    voxel_size : tuple of 3 float or None
        Voxel size (z, y, x) in nm recorded in a zarr store's metadata.
    kind : {"image", "labels"} or None
        A zarr store's kind (its pyramid's downsampling and its ``image-label`` metadata);
        default by dtype (:func:`neuron3d.zarrio.store_kind`).

    Returns
    -------
    Path or list of Path
        The store or file written, or (``slices``) the slice files in slice order.

    Raises
    ------
    ValueError
        As the writer of the format does (an existing file or folder in the way, a dtype
        PNG cannot hold).
    """
    from .zarrio import is_zarr, write_zarr

    if is_zarr(path):
        return write_zarr(path, stack, chunks, voxel_size, kind)
    if slices:
        return write_slices(path, stack)
    return write_tif(path, stack)


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


def read_labels(path, allow_integral_float=False, what="input"):
    """Read and validate a (z, y, x) label stack; see :func:`as_label_stack`."""
    return as_label_stack(read_stack(path, what=what), path, allow_integral_float)


def read_binary(path, threshold=FOREGROUND, what="input"):
    """Read a stack of images (first channel) as foreground ``value >= threshold``
    (default :data:`neuron3d.labels.FOREGROUND`, 127)."""
    stack = read_stack(path, channel=0, what=what)
    if stack.ndim != 3:
        raise ValueError(f"expected gray or colour images, got shape {stack.shape} from {path}")
    return stack >= threshold
