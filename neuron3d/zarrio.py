"""OME-Zarr stacks: chunked (z, y, x) volumes on disk, for volumes beyond one machine's memory.

A stack path ending in ``.zarr`` is a zarr directory store holding an OME-Zarr
(NGFF 0.4) image: a group whose ``multiscales`` metadata names the axes z, y, x
(and c for colour images) and the voxel size, with the full-resolution array at
``<store>/0``.  Neuroglancer (``zarr://`` or ``zarr2://``), napari and Fiji open
it as it is.  The format is zarr v2 because every one of those viewers reads it;
zarr v3 / OME-Zarr 0.5 stores (and a bare array without a group) are read too.

Masks are stored as uint8 0/255, exactly as the PNG slices hold them (viewers
have no bool type); labels keep their unsigned dtype.

Writes are atomic, like every writer of :mod:`neuron3d.io`: the store is built
under a hidden temporary name beside the target and renamed into place when
complete, so a failed or interrupted run leaves no partial store behind.
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np

SUFFIX = ".zarr"
#: Default chunk shape (z, y, x) of what is written, clipped to the volume's shape:
#: 1 MiB per uint8 chunk, 4 MiB per uint32 label chunk; slices are cut in 256 x 256 tiles,
#: 16 slices deep, a common compromise between per-slice work and 3D viewing.
DEFAULT_CHUNKS = (16, 256, 256)
NGFF_VERSION = "0.4"


def is_zarr(path):
    """Whether ``path`` names a zarr store (by its ``.zarr`` suffix)."""
    return Path(str(path).rstrip("/")).suffix.lower() == SUFFIX


def check_chunks(chunks, name="--chunks"):
    """Return ``chunks`` as a tuple of 3 ints >= 1, or raise ValueError naming ``name``."""
    chunks = tuple(chunks)
    if len(chunks) != 3 or any(isinstance(c, bool) or not isinstance(c, (int, np.integer))
                               or c < 1 for c in chunks):
        raise ValueError(f"{name} must be three whole numbers Z Y X >= 1, got "
                         f"{' '.join(map(str, chunks))}")
    return tuple(int(c) for c in chunks)


def chunks_for(shape, chunks=None):
    """The chunk shape written for a volume of ``shape``: ``chunks`` (or the default), each
    clipped to the volume (a trailing channel axis is one chunk)."""
    chunks = check_chunks(tuple(DEFAULT_CHUNKS if chunks is None else chunks)[:3])
    clipped = tuple(max(1, min(c, s)) for c, s in zip(chunks, shape[:3]))
    return clipped + tuple(shape[3:])


def open_array(path, what="input"):
    """Open the (full-resolution) array of a zarr store for reading, without reading it.

    Parameters
    ----------
    path : str or Path
        A ``.zarr`` store: an OME-Zarr image group, or a bare zarr array.
    what : str
        How the store is named in error messages.

    Returns
    -------
    zarr.Array
        (z, y, x) or (z, y, x, c).

    Raises
    ------
    FileNotFoundError
        If the store does not exist.
    ValueError
        If it is not a zarr store, holds no image array, or the array is not 3-D (or 4-D with
        2-4 channels).
    """
    import zarr

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} does not exist: {path}")
    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:  # zarr raises several types for a corrupt or foreign folder
        raise ValueError(f"{what} {path} is not a readable zarr store "
                         f"({type(exc).__name__}: {exc})") from None
    if isinstance(node, zarr.Group):
        attrs = dict(node.attrs)
        multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        try:
            name = multiscales[0]["datasets"][0]["path"] if multiscales else "0"
            node = node[name]
        except (KeyError, IndexError, TypeError):
            raise ValueError(f"{what} {path} is a zarr group without an image array "
                             "(expected OME-Zarr multiscales metadata or an array named 0)"
                             ) from None
        if not isinstance(node, zarr.Array):
            raise ValueError(f"{what} {path}: {name} is a group, expected an array")
    shape = node.shape
    if len(shape) not in (3, 4) or (len(shape) == 4 and not 2 <= shape[3] <= 4):
        raise ValueError(f"{what} {path} must hold a 3-D (z, y, x) array, got shape "
                         f"{tuple(shape)}")
    if 0 in shape:
        raise ValueError(f"{what} {path} holds no voxels (shape {tuple(shape)})")
    return node


def read_zarr(path, what="input"):
    """Read a whole zarr stack into memory (see :func:`open_array`)."""
    array = open_array(path, what)
    try:
        return array[...]
    except Exception as exc:
        raise ValueError(f"{what} {path} has unreadable chunks ({type(exc).__name__}: {exc})"
                         ) from None


def storage_dtype(dtype):
    """What a stack of ``dtype`` is stored as: bool masks as uint8 0/255, the rest unchanged."""
    return np.dtype(np.uint8) if np.dtype(dtype) == bool else np.dtype(dtype)


def as_stored(block):
    """A block as it is stored (bool masks -> uint8 0/255)."""
    block = np.asarray(block)
    return block.astype(np.uint8) * 255 if block.dtype == bool else block


def _metadata(shape, voxel_size, name):
    axes = [{"name": a, "type": "space", **({"unit": "nanometer"} if voxel_size else {})}
            for a in "zyx"]
    scale = [float(v) for v in (voxel_size or (1.0, 1.0, 1.0))]
    if len(shape) == 4:
        axes.append({"name": "c", "type": "channel"})
        scale.append(1.0)
    return {"multiscales": [{
        "version": NGFF_VERSION, "name": name, "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": scale}]}]}]}


@contextmanager
def creating(path, shape, dtype, chunks=None, voxel_size=None):
    """Create an OME-Zarr store atomically: yields the new (empty) array to fill.

    The store is built under a hidden temporary name beside ``path``; when the
    ``with`` block ends without an exception it replaces ``path`` (an existing
    store of that name is removed only then).  On an exception the temporary store
    is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : str or Path
        The ``.zarr`` store to write.
    shape : tuple of int
        (z, y, x) or (z, y, x, c).
    dtype : numpy dtype
        As stored (see :func:`storage_dtype`).
    chunks : tuple of 3 int or None
        Chunk shape (z, y, x), clipped to ``shape``; default :data:`DEFAULT_CHUNKS`.
    voxel_size : tuple of 3 float or None
        Voxel size (z, y, x) in nanometres, if known.
    """
    import zarr

    from .io import _new_temp_dir, staging_dir

    path = Path(path)
    with staging_dir(path, "a .zarr folder") as tmp:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=2)
        group.attrs.update(_metadata(shape, voxel_size, path.stem))
        array = group.create_array("0", shape=tuple(shape), dtype=dtype,
                                   chunks=chunks_for(shape, chunks), fill_value=0,
                                   chunk_key_encoding={"name": "v2", "separator": "/"})
        yield array
        if path.exists():  # swap: the old store goes aside, the new one in, the old one away
            old = _new_temp_dir(path)
            os.rename(path, old / "store")
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)


def write_zarr(path, stack, chunks=None, voxel_size=None):
    """Write an in-memory stack (or a dask array, computed chunk by chunk) to an OME-Zarr store.

    Returns ``path``.  bool masks are stored as uint8 0/255.
    """
    shape = tuple(stack.shape)
    with creating(path, shape, storage_dtype(stack.dtype), chunks, voxel_size) as array:
        if hasattr(stack, "dask"):
            import dask.array as da

            stack = stack.map_blocks(as_stored, dtype=array.dtype) if stack.dtype == bool \
                else stack
            # dask blocks = zarr chunks: no two tasks ever write the same chunk
            da.store(stack.rechunk(array.chunks), array, lock=False)
        else:
            array[...] = as_stored(stack)
    return Path(path)
