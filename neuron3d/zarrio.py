"""OME-Zarr stacks: chunked (z, y, x) volumes on disk, for volumes beyond one machine's memory.

A stack path ending in ``.zarr`` is a zarr directory store holding an OME-Zarr
(NGFF 0.4) image: a group whose ``multiscales`` metadata names the axes z, y, x
(and c for colour images) and the voxel size, with the full-resolution array at
``<store>/0``.  Neuroglancer (``zarr://`` or ``zarr2://``), napari and Fiji open
it as it is.  The format is zarr v2 because every one of those viewers reads it;
zarr v3 / OME-Zarr 0.5 stores (and a bare array without a group) are read too.

Masks are stored as uint8 0/255, exactly as the PNG slices hold them (viewers
have no bool type); labels keep their unsigned dtype.

Writes are atomic (:mod:`neuron3d.atomic`, the machinery every writer shares): the
store is built under a hidden temporary name beside the target and renamed into place
when complete, so a failed or interrupted run leaves no partial store behind.

Reading checks a store's metadata first (:func:`check_metadata`): bad JSON, a negative
shape or a dtype that is not a number is one ``ValueError`` naming the store, the file and
what was expected.  Blockwise tasks open each store once per process
(:func:`open_input`, :func:`open_output`: the zarr open cache lives here, with zarr) and
read through :func:`read_block`, which names the store when a chunk cannot be decoded.
"""

from __future__ import annotations

import json
import math
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


#: numpy kinds a stack may hold: bool, signed and unsigned integers, floats.
_NUMERIC_KINDS = "biuf"
_V3_TYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
             "float16", "float32", "float64")


def check_metadata(folder, what="input", store=None):
    """Check the zarr metadata files of ``folder`` before zarr reads them.

    Every ``.zgroup``, ``.zattrs``, ``.zarray`` (zarr v2) and ``zarr.json`` (v3) there must be
    a JSON object; an array's must give a shape of whole numbers >= 0 and a numeric dtype
    (bool, integers or floats).

    Parameters
    ----------
    folder : Path
        The store, or the array folder inside it.
    what : str
        How the store is named in error messages (e.g. ``"--input_dir"``).
    store : Path or None
        The store ``folder`` belongs to (default ``folder``), named in the message.

    Raises
    ------
    ValueError
        Naming the store, the metadata file, what it holds and what was expected.
    """
    folder = Path(folder)
    store = folder if store is None else Path(store)
    for name in (".zgroup", ".zattrs", ".zarray", "zarr.json"):
        file = folder / name
        if not file.is_file():
            continue
        label = f"{what} {store}: {os.path.relpath(file, store)}"
        try:
            meta = json.loads(file.read_bytes())
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ValueError(f"{label} is not valid JSON ({exc}); expected zarr metadata"
                             ) from None
        if not isinstance(meta, dict):
            raise ValueError(f"{label} holds {type(meta).__name__}, expected a JSON object "
                             "(zarr metadata)")
        if name == ".zarray" or (name == "zarr.json" and meta.get("node_type") == "array"):
            _check_array_metadata(meta, label, v3=name == "zarr.json")


def _check_array_metadata(meta, label, v3):
    shape = meta.get("shape")
    if not isinstance(shape, list) or any(isinstance(n, bool) or not isinstance(n, int) or n < 0
                                          for n in shape):
        raise ValueError(f"{label}: expected a shape of whole numbers >= 0, got {shape!r}")
    dtype = meta.get("data_type" if v3 else "dtype")
    try:
        ok = dtype in _V3_TYPES if v3 else \
            isinstance(dtype, str) and np.dtype(dtype).kind in _NUMERIC_KINDS
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{label}: expected a numeric dtype (bool, integers or floats), got "
                         f"{dtype!r}")


def store_path(array):
    """The folder of the zarr store that holds ``array`` (the group, for an OME-Zarr image)."""
    return str(array.store.root)


def read_block(array, selection, what=None):
    """``array[selection]`` as a numpy array; a chunk that cannot be read or decoded is a
    ValueError naming the store (``what``, default its folder)."""
    try:
        return np.asarray(array[selection])
    except MemoryError:
        raise
    except Exception as exc:  # zarr and the codecs raise many types for a corrupt chunk
        raise ValueError(f"{what or store_path(array)} has unreadable chunks "
                         f"({type(exc).__name__}: {exc})") from None


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
    check_metadata(path, what)
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
        except (KeyError, IndexError, TypeError):
            name = None
        if not isinstance(name, str):
            raise ValueError(f"{what} {path} is a zarr group without an image array "
                             "(expected OME-Zarr multiscales metadata or an array named 0)")
        check_metadata(path / name, what, store=path)
        try:
            node = node[name]
        except KeyError:
            raise ValueError(f"{what} {path} is a zarr group without an image array "
                             "(expected OME-Zarr multiscales metadata or an array named 0)"
                             ) from None
        except Exception as exc:  # what check_metadata does not foresee
            raise ValueError(f"{what} {path}: its array {name} is not readable "
                             f"({type(exc).__name__}: {exc})") from None
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
    return read_block(open_array(path, what), ..., f"{what} {path}")


_OPENED = {}  # per process: (path, mode) -> (the store folder's identity, zarr.Array)
_METADATA = (".zarray", "zarr.json", "0/.zarray", "0/zarr.json")


def _cached(path, mode, opener):
    """``opener()``, reused while the store folder at ``path`` and its array's metadata file
    are the same ones (inode, modification time, size): a worker opens each store once, not
    once per block (zarr's open reads several metadata files, about 2.5 ms).  A store
    replaced under the same name (the atomic writes rename a new folder in) or resized in
    place is opened again.  On a network file system that caches attributes (NFS), a
    replacement is seen when the cached attributes expire, as any reader sees it."""
    try:
        info = os.stat(path)
    except OSError:
        return opener()  # the opener names the missing store
    identity = [(info.st_ino, info.st_dev, info.st_mtime_ns)]
    for name in _METADATA:  # and the array's own metadata (changed by a resize in place)
        try:
            meta = os.stat(os.path.join(path, name))
        except OSError:
            continue
        identity.append((name, meta.st_ino, meta.st_mtime_ns, meta.st_size))
    identity = tuple(identity)
    key = (os.path.abspath(path), mode)
    hit = _OPENED.get(key)
    if hit is not None and hit[0] == identity:
        return hit[1]
    array = opener()
    if len(_OPENED) >= 32:
        _OPENED.clear()
    _OPENED[key] = (identity, array)
    return array


def open_input(path, what="input"):
    """The image array of the zarr store ``path`` for reading (see :func:`open_array`;
    ``what`` names it in errors), opened once per process."""
    return _cached(str(path), "r", lambda: open_array(path, what))


def open_output(path):
    """The array ``0`` of the OME-Zarr store being written at ``path`` (a store
    :func:`creating` made), for writing blocks; opened once per process."""
    import zarr

    return _cached(str(path), "r+",
                   lambda: zarr.open_array(store=str(path), path="0", mode="r+"))


def storage_dtype(dtype):
    """What a stack of ``dtype`` is stored as: bool masks as uint8 0/255, the rest unchanged."""
    return np.dtype(np.uint8) if np.dtype(dtype) == bool else np.dtype(dtype)


def as_stored(block):
    """A block as it is stored (bool masks -> uint8 0/255)."""
    block = np.asarray(block)
    return block.astype(np.uint8) * 255 if block.dtype == bool else block


def check_voxel_size(voxel_size, name="--voxel_size"):
    """``voxel_size`` as three floats (z, y, x, nm), each finite and > 0; ValueError naming
    ``name`` otherwise (NaN or infinity is not JSON that OME-Zarr readers accept)."""
    try:
        sizes = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        sizes = ()
    if len(sizes) != 3 or not all(math.isfinite(v) and v > 0 for v in sizes):
        shown = " ".join(map(str, voxel_size)) if isinstance(voxel_size, (list, tuple)) \
            else repr(voxel_size)
        raise ValueError(f"{name} must be three finite sizes > 0 in nm (z y x), got {shown}")
    return sizes


def _metadata(shape, voxel_size, name):
    axes = [{"name": a, "type": "space", **({"unit": "nanometer"} if voxel_size else {})}
            for a in "zyx"]
    scale = list(check_voxel_size(voxel_size) if voxel_size else (1.0, 1.0, 1.0))
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

    from .atomic import new_temp_dir, staging_dir

    if voxel_size is not None:
        check_voxel_size(voxel_size)  # before anything is created
    path = Path(path)
    with staging_dir(path, "a .zarr folder") as tmp:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=2)
        group.attrs.update(_metadata(shape, voxel_size, path.stem))
        array = group.create_array("0", shape=tuple(shape), dtype=dtype,
                                   chunks=chunks_for(shape, chunks), fill_value=0,
                                   chunk_key_encoding={"name": "v2", "separator": "/"})
        yield array
        if path.exists():  # swap: the old store goes aside, the new one in, the old one away
            old = new_temp_dir(path)
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
