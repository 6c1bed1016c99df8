"""Prediction of zarr volumes (``translate.py --mode test`` with a ``.zarr`` --input_dir).

The input is an EM volume (z, y, x) -- or (z, y, x, c) pairs such as
``process3D.py --operation consecutive`` writes -- in a zarr store; the output is a zarr
store of the network's first output channel, uint8 (z, y, x), chunked like the input.

**Batch statistics.** pix2pix normalised with the statistics of the image at hand at
test time too, so a tile's output would depend on the rest of the slice.  This
trainer's prediction calls the generator with ``training=False``, which in Keras 3
normalises with the moving averages kept during training (see
:mod:`imagetranslation.models`): an output pixel depends only on the input within the
generator's receptive field.  So each task predicts one z-chunk of slices, whole by
default (exactly ``--mode test`` on the same slices) or, with ``--tile N``, in N x N
tiles grown by the receptive radius (measured once per network by
:func:`receptive_radius`, rounded up to the generator's stride) of which only the
centres are kept: equal to whole-slice prediction within one grey level.
"""

from __future__ import annotations

import numpy as np

_CACHE = {}


def _generator(checkpoint, weights=None):
    """The generator of ``checkpoint`` (loaded once per process: dask workers reuse it);
    ``weights`` as for :func:`imagetranslation.inference.load_for_inference`."""
    key = (str(checkpoint), weights)
    if key not in _CACHE:
        from imagetranslation.inference import load_for_inference

        _CACHE[key] = load_for_inference(checkpoint, {"weights": weights})
    return _CACHE[key]


def receptive_radius(generator, stride, channels=3, start=128, largest=4096):
    """How many pixels away an input pixel can change an output pixel.

    Measured: an impulse at the centre of a blank canvas, the farthest output pixel that
    differs from the blank canvas' output; the canvas doubles until the change stays clear
    of its border.
    """
    from imagetranslation.inference import predict

    size = start
    while size <= largest:
        blank = np.zeros((size, size, channels), np.float32)
        poke = blank.copy()
        poke[size // 2, size // 2] = 1.0
        diff = np.any(predict(generator, poke, stride) != predict(generator, blank, stride),
                      axis=-1)
        ys, xs = np.nonzero(diff)
        if not len(ys):
            return 0
        radius = int(max(abs(ys - size // 2).max(), abs(xs - size // 2).max()))
        if radius < size // 2 - stride:
            return radius
        size *= 2
    raise ValueError(f"the generator's receptive field exceeds {largest} pixels; predict "
                     "whole slices (no --tile)")


def as_network_input(block):
    """uint8 (z, y, x) or (z, y, x, c) -> float (z, y, x, 3) in [-1, 1], as PNGs are read."""
    from imagetranslation.data import to_model_range

    block = np.asarray(block)
    if block.ndim == 3:
        block = np.repeat(block[..., None], 3, axis=-1)
    elif block.shape[-1] < 3:
        block = np.concatenate([block, np.zeros(block.shape[:-1] + (3 - block.shape[-1],),
                                                block.dtype)], axis=-1)
    return to_model_range(block[..., :3])


def predict_slice(generator, image, stride, tile=None, halo=0, tta=False):
    """One (y, x, 3) slice: whole, or tile by tile (``tile`` x ``tile`` centres, ``halo``
    pixels of context, tile origins on the stride's grid)."""
    from imagetranslation.data import from_model_range
    from imagetranslation.inference import predict, predict_tta

    run = predict_tta if tta else predict
    if tile is None:
        return from_model_range(run(generator, image, stride))[..., 0]
    height, width = image.shape[:2]
    out = np.zeros((height, width), np.uint8)
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(y0 + tile, height), min(x0 + tile, width)
            ya, xa = max(0, y0 - halo), max(0, x0 - halo)   # on the stride grid: halo and
            yb, xb = min(height, y1 + halo), min(width, x1 + halo)  # tile are multiples
            piece = from_model_range(run(generator, image[ya:yb, xa:xb], stride))[..., 0]
            out[y0:y1, x0:x1] = piece[y0 - ya:y1 - ya, x0 - xa:x1 - xa]
    return out


def _predict_block(checkpoint, source, output, tile, tta, region, weights=None):
    """Predict the slices of ``region`` (z range, whole slices) into the output store."""
    from imagetranslation.models import stride_of
    from neuron3d.zarrio import open_input, open_output, read_block

    generator, options = _generator(checkpoint, weights)
    stride = stride_of(options)
    halo = 0
    if tile is not None:
        halo = -(-receptive_radius(generator, stride) // stride) * stride
    block = as_network_input(read_block(open_input(source, "--input_dir"), region[0],
                                        f"--input_dir {source}"))
    out = np.stack([predict_slice(generator, image, stride, tile, halo, tta) for image in block])
    open_output(output)[region[0]] = out


def check_em(array, source):
    """Refuse a store that is not EM: uint8 (z, y, x), or (z, y, x, c) pairs of slices.

    Raises
    ------
    ValueError
        Naming the store, its dtype and shape (float, bool and label stores such as
        uint16 IDs are not network inputs).
    """
    if array.dtype != np.uint8:
        raise ValueError(f"--input_dir {source} holds {array.dtype} {tuple(array.shape)}, "
                         "expected EM: uint8 (z, y, x) or (z, y, x, c) (the images --mode test "
                         "of PNGs reads)")


def predict_volume(checkpoint, source, output, chunks=None, tile=None, tta=False, client=None,
                   weights=None):
    """Predict zarr ``source`` into zarr ``output`` (atomic), a z-chunk of whole slices per
    task: on ``client`` (dask) when given, else in this process.  ``weights`` as for
    :func:`imagetranslation.inference.load_for_inference`.  Returns the shape.

    Raises
    ------
    ValueError, FileNotFoundError
        Before anything is written: a source that is not EM (:func:`check_em`), a bad
        ``tile``, or ``weights`` the run lacks; while predicting, an unreadable chunk of
        ``source`` (naming it; the output is not created).
    """
    from imagetranslation.inference import check_weights
    from neuron3d import blockwise, zarrio

    array = zarrio.open_array(source, "--input_dir")
    check_em(array, source)
    if tile is not None and (tile < 1 or tile % 4):
        raise ValueError(f"--tile must be a multiple of 4 >= 4, got {tile}")
    check_weights(checkpoint, weights)
    shape = tuple(array.shape[:3])
    chunks = zarrio.chunks_for(shape, chunks or array.chunks[:3])
    grid = blockwise.block_grid(shape, (chunks[0],) + shape[1:])
    with zarrio.creating(output, shape, np.uint8, chunks) as out:
        task = blockwise.task(_predict_block, str(checkpoint), str(source),
                              zarrio.store_path(out), tile, tta, weights=weights)
        blockwise.run_tasks(client or blockwise.SerialExecutor(), task, grid, "predict blocks")
    return shape
