"""OME-Zarr stacks: chunked (z, y, x) volumes on disk, for volumes beyond one machine's memory.

A stack path ending in ``.zarr`` is a zarr directory store holding an OME-Zarr
(NGFF 0.4) image: a group whose ``multiscales`` metadata names the axes z, y, x
(and c for colour images) and the voxel size, with the full-resolution array at
``<store>/0``.  Neuroglancer (``zarr://`` or ``zarr2://``), napari and Fiji open
it as it is.  The format is zarr v2 because every one of those viewers reads it;
zarr v3 / OME-Zarr 0.5 stores (and a bare array without a group) are read too.

Masks are stored as uint8 0/255, exactly as the PNG slices hold them (viewers
have no bool type); labels keep their unsigned dtype.

Every store written carries a multiscale pyramid (``<store>/1``, ``2``, ...: 2x
downsampling of the axes that are not already coarse, while a level spans more than one
chunk across y or x; :func:`pyramid_levels`), the mean for images and probabilities, the
field's striding for labels, written block by block (on the engine for the blockwise
commands), so viewers stay responsive zoomed out.  Label stores say so with OME-Zarr's
``image-label`` metadata.  Readers here read level 0.

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


def _metadata(shape, voxel_size, name, levels=((1, 1, 1),), kind="image"):
    axes = [{"name": a, "type": "space", **({"unit": "nanometer"} if voxel_size else {})}
            for a in "zyx"]
    base = list(check_voxel_size(voxel_size) if voxel_size else (1.0, 1.0, 1.0))
    datasets = []
    for k, factor in enumerate(levels):
        transforms = [{"type": "scale", "scale": [b * f for b, f in zip(base, factor)]
                       + [1.0] * (len(shape) - 3)}]
        if kind == "image" and k:  # a mean's voxel lies at the centre of those it averages
            transforms.append({"type": "translation", "translation": [
                b * (f - 1) / 2 for b, f in zip(base, factor)] + [0.0] * (len(shape) - 3)})
        datasets.append({"path": str(k), "coordinateTransformations": transforms})
    if len(shape) == 4:
        axes.append({"name": "c", "type": "channel"})
    meta = {"multiscales": [{"version": NGFF_VERSION, "name": name, "axes": axes,
                             "datasets": datasets}]}
    if kind == "labels":
        meta["image-label"] = {"version": NGFF_VERSION}
    return meta


# ---- the multiscale pyramid -------------------------------------------------------------
#: At most this many levels below the full resolution.
MAX_LEVELS = 8


def store_kind(dtype):
    """How a store of ``dtype`` is downsampled: ``"labels"`` (integers of 16 bits or more,
    the label dtypes: the voxel at each level's stride) or ``"image"`` (uint8 EM, masks and
    probabilities, floats: the mean)."""
    dtype = np.dtype(dtype)
    return "labels" if dtype.kind in "iu" and dtype.itemsize >= 2 else "image"


def pyramid_levels(shape, chunks, voxel_size=None):
    """The cumulative (z, y, x) downsampling factor of every level, the first (1, 1, 1).

    Each level halves the axes that are not already coarse: those finer than the coarsest
    (all of them when the voxel is a cube, or when no finer axis has more than one voxel), or
    y and x when the voxel size is unknown (serial sections: z is the coarse axis).  A level
    is added while the previous one has more than one chunk across y or x, at most
    :data:`MAX_LEVELS`."""
    size = [float(v) for v in voxel_size] if voxel_size else None
    factor = [1, 1, 1]
    levels = [tuple(factor)]
    while len(levels) <= MAX_LEVELS:
        extent = [-(-n // f) for n, f in zip(shape[:3], factor)]
        if extent[1] <= chunks[1] and extent[2] <= chunks[2]:
            break
        can = [a for a in range(3) if extent[a] > 1 and (size is not None or a > 0)]
        if size is not None:  # the finer axes, or all that can be when none of them can
            current = [s * f for s, f in zip(size, factor)]
            can = [a for a in can if current[a] < max(current)] or can
        halve = can
        if not halve:
            break
        for a in halve:
            factor[a] *= 2
        levels.append(tuple(factor))
    return levels


def _level_array(path, level, mode):
    import zarr

    return _cached(os.path.join(str(path), str(level)), mode,
                   lambda: zarr.open_array(store=str(path), path=str(level), mode=mode))


def downsample(block, step, kind):
    """One level down: ``block`` (z, y, x[, c]) reduced by ``step`` (per axis 1 or 2):
    labels strided (the first voxel of each step), images the mean of the voxels a step
    covers (those inside the block at its far edges), rounded for integer dtypes."""
    if kind == "labels":
        return block[::step[0], ::step[1], ::step[2]]
    out_shape = [-(-n // s) for n, s in zip(block.shape[:3], step)]
    padded = [o * s for o, s in zip(out_shape, step)]
    pad = [(0, p - n) for p, n in zip(padded, block.shape[:3])] + [(0, 0)] * (block.ndim - 3)
    values = np.pad(block.astype(np.float64), pad)
    weight = np.pad(np.ones(block.shape[:3]), pad[:3])
    shape = [d for o, s in zip(out_shape, step) for d in (o, s)] + list(block.shape[3:])
    sums = values.reshape(shape).sum(axis=(1, 3, 5))
    counts = weight.reshape(shape[:6]).sum(axis=(1, 3, 5))
    mean = sums / counts.reshape(counts.shape + (1,) * (block.ndim - 3))
    if np.issubdtype(block.dtype, np.integer):
        info = np.iinfo(block.dtype)
        return np.clip(np.rint(mean), info.min, info.max).astype(block.dtype)
    return mean.astype(block.dtype)


def pyramid_task(path, level, step, kind, region):
    """One block of level ``level`` (``region`` in its voxels) from level ``level - 1``."""
    source = _level_array(path, level - 1, "r")
    read = tuple(slice(r.start * s, min(r.stop * s, n))
                 for r, s, n in zip(region, step, source.shape))
    _level_array(path, level, "r+")[region] = downsample(read_block(source, read), step, kind)


def _write_pyramid(group, array, levels, kind, client):
    """Levels 1.. of a store whose level 0 is written, each from the previous one, block by
    block (on ``client``, a dask client or the serial executor, when given)."""
    from itertools import product

    path = store_path(array)
    chunks = array.chunks
    for k in range(1, len(levels)):
        step = tuple(b // a for a, b in zip(levels[k - 1], levels[k]))
        shape = tuple(-(-n // f) for n, f in zip(array.shape[:3], levels[k])) + \
            tuple(array.shape[3:])
        group.create_array(str(k), shape=shape, dtype=array.dtype,
                           chunks=tuple(min(c, n) for c, n in zip(chunks, shape)),
                           fill_value=0, chunk_key_encoding={"name": "v2", "separator": "/"})
        regions = list(product(*[[slice(a, min(a + c, n)) for a in range(0, n, c)]
                                 for n, c in zip(shape[:3], chunks[:3])]))
        if client is None:
            for region in regions:
                pyramid_task(path, k, step, kind, region)
        else:
            from functools import partial

            for future in client.map(partial(pyramid_task, path, k, step, kind), regions,
                                     pure=False):
                future.result()


@contextmanager
def creating(path, shape, dtype, chunks=None, voxel_size=None, kind=None, pyramid=True,
             client=None):
    """Create an OME-Zarr store atomically: yields the new (empty) array to fill.

    The store is built under a hidden temporary name beside ``path``; when the
    ``with`` block ends without an exception, the multiscale pyramid is added (levels
    1.., see :func:`pyramid_levels`) and the store replaces ``path`` (an existing
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
    kind : {"image", "labels"} or None
        How the pyramid is downsampled (the mean, or striding) and whether the store says
        it is a label image (OME-Zarr's ``image-label`` metadata); default
        :func:`store_kind` of ``dtype``.
    pyramid : bool
        Add the levels below the full resolution (a temporary store does not need them).
    client : dask.distributed.Client or SerialExecutor, optional
        Where the pyramid's blocks are computed (default: in this process, block by block).
    """
    import zarr

    from .atomic import new_temp_dir, staging_dir

    if voxel_size is not None:
        check_voxel_size(voxel_size)  # before anything is created
    kind = store_kind(dtype) if kind is None else kind
    if kind not in ("image", "labels"):
        raise ValueError(f"kind must be 'image' or 'labels', got {kind!r}")
    path = Path(path)
    chunks = chunks_for(shape, chunks)
    levels = pyramid_levels(shape, chunks, voxel_size) if pyramid and 0 not in shape \
        else [(1, 1, 1)]
    with staging_dir(path, "a .zarr folder") as tmp:
        group = zarr.open_group(store=str(tmp), mode="w", zarr_format=2)
        group.attrs.update(_metadata(shape, voxel_size, path.stem, levels, kind))
        array = group.create_array("0", shape=tuple(shape), dtype=dtype,
                                   chunks=chunks, fill_value=0,
                                   chunk_key_encoding={"name": "v2", "separator": "/"})
        yield array
        _write_pyramid(group, array, levels, kind, client)
        if path.exists():  # swap: the old store goes aside, the new one in, the old one away
            old = new_temp_dir(path)
            os.rename(path, old / "store")
            os.rename(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, path)


def write_zarr(path, stack, chunks=None, voxel_size=None, kind=None):
    """Write an in-memory stack (or a dask array, computed chunk by chunk) to an OME-Zarr store.

    Returns ``path``.  bool masks are stored as uint8 0/255.  ``kind`` ("image" or
    "labels"; default by dtype, :func:`store_kind`) decides the pyramid's downsampling and
    the ``image-label`` metadata (uint8 ground-truth labels need ``kind="labels"``).
    """
    shape = tuple(stack.shape)
    with creating(path, shape, storage_dtype(stack.dtype), chunks, voxel_size,
                  kind=kind) as array:
        if hasattr(stack, "dask"):
            import dask.array as da

            stack = stack.map_blocks(as_stored, dtype=array.dtype) if stack.dtype == bool \
                else stack
            # dask blocks = zarr chunks: no two tasks ever write the same chunk
            da.store(stack.rechunk(array.chunks), array, lock=False)
        else:
            array[...] = as_stored(stack)
    return Path(path)
