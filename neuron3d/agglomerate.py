"""Agglomerating reconstruction: fragments, an affinity graph, waterz.

The thesis labels 3D connected components of thinned cytoplasm and overlap
masks (:mod:`neuron3d.reconstruct`); a gap in one predicted membrane merges two
neurons and a missing overlap splits one.  The field's answer, implemented
here, treats the predicted membrane probabilities as in-plane affinities and
the predicted overlap probabilities as between-slice affinities, cuts every
slice into fragments with a watershed of the membrane, and merges fragments
in the order of their boundary score (the median affinity on their common
boundary, by default) up to a threshold, with waterz (Funke et al. 2018).
Every voxel gets a label.

Conventions: stacks are (z, y, x); probabilities are float in [0, 1] (1 =
membrane / same neuron continues), or uint8 images 0..255 (scaled by 1/255).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys

import numpy as np

from .labels import label_dtype

__all__ = [
    "DEFAULT_THRESHOLD", "FRAGMENT_MODES", "SCORINGS", "affinities", "agglomerate",
    "check_fragment_mode", "check_inputs", "check_thresholds", "fragments", "small_objects",
]

#: How :func:`fragments` cuts the membrane: ``2d`` a watershed per slice (the default), ``3d``
#: one of the volume (blockwise: of each block), for isotropic data (FIB-SEM), where a neurite
#: within the slice plane keeps one fragment across slices (documentation/real_em.md).
FRAGMENT_MODES = ("2d", "3d")


#: waterz scoring functions by name; all are compiled into waterz's wheels.
#: The score of an edge is 1 - (statistic of the affinities on the boundary),
#: i.e. a boundary probability: fragments merge while it is below the threshold.
SCORINGS = {
    "median": "OneMinus<HistogramQuantileAffinity<RegionGraphType,50,ScoreValue,256,false>>",
    "mean": "OneMinus<MeanAffinity<RegionGraphType,ScoreValue>>",
    # waterz's default initialisation: an edge starts from its maximum affinity
    "median_max": "OneMinus<HistogramQuantileAffinity<RegionGraphType,50,ScoreValue,256,true>>",
}

#: The merge threshold the demo's sweep on its held-out quadrant d supports (see
#: documentation/agglomeration.md); experiment_8.sh chooses its own on d.
DEFAULT_THRESHOLD = 0.6

#: Bins of waterz's histograms (the median is the centre of one of these bins).
BINS = 256


def _probabilities(stack, name, ndim=3):
    """``stack`` as float32 in [0, 1]: uint8 scaled by 1/255, floats checked."""
    array = np.asarray(stack)
    if array.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D (z, y, x) stack, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / np.float32(255)
    if array.dtype == bool:
        return array.astype(np.float32)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must be float in [0, 1] or uint8 0..255, got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    if array.size:
        lo, hi = float(array.min()), float(array.max())
        if not (0.0 <= lo and hi <= 1.0):
            raise ValueError(
                f"{name} must be probabilities in [0, 1] (or uint8 0..255), "
                f"got values from {lo:g} to {hi:g} (dtype {np.asarray(stack).dtype})"
            )
    return array


def check_inputs(membrane, overlap, sources=("membrane", "overlap")):
    """Validate and convert a membrane and an overlap stack.

    Parameters
    ----------
    membrane : numpy.ndarray
        (z, y, x) membrane probability: float in [0, 1], bool, or uint8 0..255.
    overlap : numpy.ndarray
        (z - 1, y, x) overlap probability between slice z and z + 1, same
        dtypes.  A stack of z slices is accepted too and its last slice
        ignored (as the thesis' reconstruct does with a full folder).

    Returns
    -------
    membrane, overlap : numpy.ndarray
        float32 in [0, 1], shapes (z, y, x) and (z - 1, y, x).

    Raises
    ------
    ValueError
        If a stack is not 3-D, has values outside [0, 1] (floats), or the
        counts or slice sizes disagree.
    """
    membrane = _probabilities(membrane, f"membrane stack {sources[0]}"
                              if sources[0] != "membrane" else "membrane")
    overlap = _probabilities(overlap, f"overlap stack {sources[1]}"
                             if sources[1] != "overlap" else "overlap")
    depth = len(membrane)
    if depth == 0:
        raise ValueError("membrane stack has no slices")
    named = "" if tuple(sources) == ("membrane", "overlap") else f" ({sources[0]}, {sources[1]})"
    if overlap.shape[1:] != membrane.shape[1:]:
        raise ValueError(
            f"membrane slices are {membrane.shape[1]} x {membrane.shape[2]} but overlap "
            f"slices are {overlap.shape[1]} x {overlap.shape[2]}{named}"
        )
    if len(overlap) == depth:
        overlap = overlap[: depth - 1]
    if len(overlap) != depth - 1:
        raise ValueError(
            f"{depth} membrane slices need {depth - 1} overlap slices (or {depth}, the last "
            f"ignored), got {len(overlap)}{named}"
        )
    return membrane, overlap


def affinities(membrane, overlap):
    """The affinity graph of a membrane and an overlap stack, in waterz's layout.

    waterz reads ``affs[d, z, y, x]`` as the affinity between voxel (z, y, x)
    and its predecessor along axis d: (z - 1, y, x) for d = 0, (z, y - 1, x)
    for d = 1, (z, y, x - 1) for d = 2.  Here::

        affs[0, z]       = overlap[z - 1]                           for z >= 1
        affs[1, :, y]    = 1 - max(membrane[:, y], membrane[:, y - 1])    y >= 1
        affs[2, :, :, x] = 1 - max(membrane[:, :, x], membrane[:, :, x - 1])
                                                                   x >= 1

    and 0 at index 0 of each axis (no predecessor; waterz never reads it).
    Between slices only the overlap speaks: mixing the membrane into the z
    affinity lets neurons merge through z.

    Parameters
    ----------
    membrane : numpy.ndarray
        (z, y, x) membrane probability (float in [0, 1], or uint8 0..255).
    overlap : numpy.ndarray
        (z - 1, y, x) probability that the neuron at (y, x) continues from
        slice z to z + 1 (or z slices, the last ignored).

    Returns
    -------
    numpy.ndarray
        (3, z, y, x) float32, C-contiguous.

    Raises
    ------
    ValueError
        See :func:`check_inputs`.
    """
    return _affinities(*check_inputs(membrane, overlap))


def _affinities(membrane, overlap):
    """:func:`affinities` of checked float32 stacks."""
    affs = np.zeros((3,) + membrane.shape, dtype=np.float32)
    affs[0, 1:] = overlap
    np.maximum(membrane[:, 1:], membrane[:, :-1], out=affs[1, :, 1:])
    np.subtract(1, affs[1, :, 1:], out=affs[1, :, 1:])
    np.maximum(membrane[:, :, 1:], membrane[:, :, :-1], out=affs[2, :, :, 1:])
    np.subtract(1, affs[2, :, :, 1:], out=affs[2, :, :, 1:])
    return affs


def _slice_fragments(membrane, seed_threshold, sigma, min_distance):
    """Watershed fragments of one (y, x) membrane slice (or of a (z, y, x) volume, the same
    way in 3-D): int32 labels 1..n, and n."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    mask = membrane < seed_threshold
    components, count = ndimage.label(mask)
    if count == 0:
        return np.ones(membrane.shape, dtype=np.int32), 1
    distance = ndimage.distance_transform_edt(mask).astype(np.float32)
    if sigma > 0:
        distance = ndimage.gaussian_filter(distance, sigma)
    size = 2 * min_distance + 1
    peaks = mask & (distance == ndimage.maximum_filter(distance, size=size))
    # every low-membrane component gets a seed: at its maximum if it has none
    seeded = np.zeros(count + 1, dtype=bool)
    seeded[components[peaks]] = True
    seeded[0] = True
    if not seeded.all():
        deepest = np.zeros(count + 1, dtype=np.float32)
        np.maximum.at(deepest, components, distance)
        peaks |= ~seeded[components] & (distance == deepest[components])
    markers, count = ndimage.label(peaks, structure=np.ones((3,) * peaks.ndim, dtype=bool))
    return watershed(membrane, markers).astype(np.int32, copy=False), count


def _workers(workers):
    """Number of threads: ``workers``, or the CPUs this process may use."""
    if workers is None:
        try:
            return max(len(os.sched_getaffinity(0)), 1)
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers}")
    return int(workers)


def _map(function, items, workers):
    """``map`` over threads (the scipy / scikit-image kernels release the GIL)."""
    if workers == 1:
        return list(map(function, items))
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))


def _check_fragment_options(seed_threshold, sigma, min_distance):
    """ValueError unless the options of :func:`fragments` are in range."""
    if not 0.0 < seed_threshold <= 1.0:
        raise ValueError(f"seed_threshold must be in (0, 1], got {seed_threshold}")
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    if int(min_distance) != min_distance or min_distance < 0:
        raise ValueError(f"min_distance must be an integer >= 0, got {min_distance}")


def check_fragment_mode(mode):
    """ValueError unless ``mode`` is one of :data:`FRAGMENT_MODES`."""
    if mode not in FRAGMENT_MODES:
        raise ValueError(f"fragments must be one of {', '.join(FRAGMENT_MODES)}, got {mode!r}")


def fragments(membrane, seed_threshold=0.2, sigma=0.0, min_distance=5, workers=None,
              mode="2d"):
    """Over-segment each slice (``mode="3d"``: the volume) with a watershed of its membrane
    probability.

    In each slice, seeds are the maxima of the distance transform of
    ``membrane < seed_threshold`` (smoothed with a Gaussian of ``sigma``
    pixels), at least ``min_distance`` pixels apart in the maximum-filter
    sense (the pixels of one plateau are one seed; a low-membrane component
    without a maximum gets one at its deepest pixel).  The membrane is
    flooded from the seeds (``skimage.segmentation.watershed``), so every
    pixel is assigned.  A slice without any pixel below ``seed_threshold``
    is one fragment.

    Parameters
    ----------
    membrane : numpy.ndarray
        (z, y, x) membrane probability (float in [0, 1], or uint8 0..255).
    seed_threshold : float
        Pixels below this membrane probability are inside a neuron.
    sigma : float
        Smoothing of the distance transform in pixels (0: none).
    min_distance : int
        Half width of the maximum filter that finds seeds (0: every connected
        low-membrane region is one seed).
    workers : int, optional
        Threads working on slices (default: the CPUs available).  The result
        does not depend on it.
    mode : {"2d", "3d"}
        ``3d``: the same in 3-D, once over the volume (distance transform, maximum
        filter, seed components and flooding with 3-D neighbourhoods), so a
        fragment may span slices.

    Returns
    -------
    numpy.ndarray
        (z, y, x) uint64 fragment IDs 1..F, no 0; with ``2d`` unique across
        slices (slice z's IDs all lower than slice z + 1's), with ``3d`` in order of
        first appearance.

    Raises
    ------
    ValueError
        If the stack is not a 3-D probability, or a parameter or the mode is out of range.
    """
    membrane = _probabilities(membrane, "membrane")
    _check_fragment_options(seed_threshold, sigma, min_distance)
    check_fragment_mode(mode)
    if mode == "3d":
        import fastremap

        labels = _slice_fragments(membrane, seed_threshold, sigma, int(min_distance))[0]
        # IDs in order of first appearance, as given fragment_ids are renumbered
        return np.ascontiguousarray(fastremap.renumber(labels)[0], dtype=np.uint64)
    out = np.empty(membrane.shape, dtype=np.uint64)

    def one(z):
        labels, count = _slice_fragments(membrane[z], seed_threshold, sigma, int(min_distance))
        out[z] = labels
        return count

    counts = _map(one, range(len(membrane)), _workers(workers))
    offsets = np.concatenate([[0], np.cumsum(counts[:-1])]).astype(np.uint64)
    out += offsets[:, None, None]
    return out


def _pair_index(lower, upper):
    """Index 0..P-1 of the fragment pair (lower[i], upper[i]) of every pixel, and P.

    Per-slice fragment IDs of one slice are a contiguous range (see :func:`fragments`), so
    a pair is ``a * width + b`` in local IDs, without sorting when that range is small (3-D
    fragments span wider ranges, and are then sorted).
    """
    lo_base, hi_base = lower.min(), upper.min()
    width = int(upper.max() - hi_base) + 1
    span = (int(lower.max() - lo_base) + 1) * width
    code = (lower - lo_base).astype(np.int64)
    code *= width
    code += (upper - hi_base).astype(np.int64)
    if span <= 8 * code.size:
        present = np.zeros(span, dtype=bool)
        present[code] = True
        index = np.cumsum(present, dtype=np.int64) - 1
        return index[code], int(index[-1]) + 1
    pairs, inverse = np.unique(code, return_inverse=True)
    return inverse.ravel(), len(pairs)


def _rim_fill(affs, frags, membrane, z_threshold, scoring, workers=1):
    """Let only the pixels the overlap image speaks for decide between-slice edges.

    An overlap image is 0 on membranes by definition, so where either slice
    is membrane (``membrane >= z_threshold``) its 0 says nothing about
    whether the neuron continues.  Fragments include the membrane rim, and on
    thin neurites the rim is most of the contact between two slices'
    fragments: counted, its zeros split them.  So each pair of fragments
    (a in slice z, b in slice z + 1) gets at its rim pixels the statistic of
    its speaking pixels (their median on waterz's 256-bin histogram, or
    their mean), or 0 if it has none.  Copies of the median (mean) leave the
    median (mean) unchanged, so each initial between-slice score is exactly
    that of the speaking pixels; after merges, pairs weigh by their whole
    contact.  Modifies ``affs[0]`` in place.
    """

    def one(z):
        lower, upper = frags[z].ravel(), frags[z + 1].ravel()
        index, count = _pair_index(lower, upper)
        values = affs[0, z + 1].ravel()
        speak = membrane[z].ravel() < z_threshold
        speak &= membrane[z + 1].ravel() < z_threshold
        spoken = index[speak]
        if scoring == "mean":
            sums = np.bincount(spoken, weights=values[speak], minlength=count)
            counts = np.bincount(spoken, minlength=count)
            fill = np.divide(sums, counts, out=np.zeros(count), where=counts > 0)
        else:  # the histogram median, as waterz computes it
            bins = np.minimum((values[speak] * BINS).astype(np.int64), BINS - 1)
            hist = np.bincount(spoken * BINS + bins, minlength=count * BINS)
            cumulative = hist.reshape(count, BINS).cumsum(axis=1)
            counts = cumulative[:, -1]
            median_bin = (cumulative <= (counts // 2)[:, None]).sum(axis=1)
            fill = np.where(counts > 0, (median_bin + 0.5) / BINS, 0.0)
        rim = ~speak
        values[rim] = fill[index[rim]]

    _map(one, range(len(frags) - 1), workers)


@contextlib.contextmanager
def _quiet_stdout():
    """Silence waterz's progress lines: its C++ ``std::cout`` (file descriptor 1) and
    its Python prints (``sys.stdout``).  Other threads' output to either is lost meanwhile."""
    sys.stdout.flush()
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            saved = os.dup(1)
        except OSError:  # no file descriptor 1 to silence
            yield
            return
        try:
            with open(os.devnull, "w") as devnull:
                os.dup2(devnull.fileno(), 1)
                try:
                    yield
                finally:
                    os.dup2(saved, 1)
        finally:
            os.close(saved)


def check_thresholds(thresholds, name="merge thresholds"):
    """The merge thresholds as a list of floats; ValueError naming ``name`` (e.g. the flag)
    unless there is at least one and each is in [0, 1]."""
    try:
        values = [float(t) for t in np.atleast_1d(thresholds)]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be numbers in [0, 1], got {thresholds!r}") from error
    if not values:
        raise ValueError(f"no {name} given (need at least one in [0, 1])")
    bad = [t for t in values if not 0.0 <= t <= 1.0]
    if bad:
        raise ValueError(f"{name} must be in [0, 1], got {bad[0]:g}")
    return values


def agglomerate(membrane, overlap, thresholds=(DEFAULT_THRESHOLD,), scoring="median",
                seed_threshold=0.2, sigma=0.0, min_distance=5, z_threshold=0.3, fragment_ids=None,
                workers=None, sources=("membrane", "overlap"), fragment_mode="2d"):
    """Reconstruct neurons by agglomerating watershed fragments (``reconstruct3D.py --method
    agglomerate``).

    1. fragments: :func:`fragments` of the membrane (per-slice watershed, or with
       ``fragment_mode="3d"`` one of the volume);
    2. affinities: :func:`affinities` (in-plane ``1 - max(membrane[p],
       membrane[q])``, between slices ``overlap`` at the same (y, x));
    3. between slices only pixels with ``membrane < z_threshold`` in both
       slices speak (the overlap image is 0 on membranes by definition): see
       ``_rim_fill``; ``z_threshold=None`` lets every contact pixel vote;
    4. waterz merges the pair of neighbouring regions with the lowest score,
       ``1 - statistic`` of the affinities on their common boundary (the
       median by default), until no score is below the threshold.

    The defaults (median scoring, ``z_threshold=0.3``, fragments seeded below
    0.2 with ``sigma=0`` and ``min_distance=5``, threshold 0.6) were chosen on
    the held-out quadrant d of the demo and of the gala FIB-SEM crop, never on
    the quadrant that is reported; documentation/agglomeration.md has the
    sweeps.  uint8 inputs (the networks' PNG outputs) are scaled by 1/255.

    Parameters
    ----------
    membrane : numpy.ndarray
        (z, y, x) membrane probability: float in [0, 1] or uint8 0..255
        (scaled by 1/255; bool is 0/1).
    overlap : numpy.ndarray
        (z - 1, y, x) overlap probability between slices z and z + 1, same
        dtypes (z slices are accepted, the last ignored).
    thresholds : float or sequence of float
        Merge thresholds in [0, 1] on the boundary score: regions merge while
        the median (mean) membrane-like value ``1 - affinity`` on their
        boundary is below it.  Higher merges more.
    scoring : {"median", "mean", "median_max"}
        The boundary statistic (see :data:`SCORINGS`).
    seed_threshold, sigma, min_distance :
        Fragment options, see :func:`fragments`.
    z_threshold : float or None
        Membrane probability below which (in both slices) a pixel's overlap
        counts for the edge between two slices' fragments.
    fragment_ids : numpy.ndarray, optional
        (z, y, x) integer fragments (no 0) to use instead of :func:`fragments`;
        left unchanged.
    workers : int, optional
        Threads for the per-slice steps (default: the CPUs available); the
        result does not depend on it.
    sources : tuple of str
        Where the membrane and overlap stacks came from (file names), for messages.
    fragment_mode : {"2d", "3d"}
        How :func:`fragments` cuts the membrane (:data:`FRAGMENT_MODES`); not with
        ``fragment_ids``.

    Returns
    -------
    list of numpy.ndarray
        One (z, y, x) label volume per threshold, in the order given: every
        voxel labelled, IDs 1..K in order of first appearance, the smallest
        unsigned dtype of at least 16 bits that holds K.

    Raises
    ------
    ValueError
        If the inputs disagree in counts or slice sizes, a stack is not a
        probability, a threshold is outside [0, 1] or none is given, or the
        scoring is unknown.
    """
    import fastremap

    if scoring not in SCORINGS:
        raise ValueError(f"unknown scoring {scoring!r}; choose one of {', '.join(SCORINGS)}")
    values = check_thresholds(thresholds)
    membrane, overlap = check_inputs(membrane, overlap, sources)
    if z_threshold is not None and not 0.0 < z_threshold <= 1.0:
        raise ValueError(f"z_threshold must be in (0, 1] or None, got {z_threshold}")
    workers = _workers(workers)
    if fragment_ids is None:
        frags = fragments(membrane, seed_threshold, sigma, min_distance, workers, fragment_mode)
    elif fragment_mode != "2d":
        raise ValueError("fragment_ids and fragment_mode are exclusive")
    else:
        frags = np.array(fragment_ids, dtype=np.uint64, order="C")  # waterz overwrites it
        if frags.shape != membrane.shape:
            raise ValueError(
                f"fragments have shape {frags.shape}, the membrane stack {membrane.shape}"
            )
        if frags.size and frags.min() == 0:
            raise ValueError("fragments must not contain 0 (waterz ignores it)")
        # waterz makes a node for every ID up to the largest: make them 1..F
        frags = np.ascontiguousarray(fastremap.renumber(frags, in_place=True)[0],
                                     dtype=np.uint64)
    affs = _affinities(membrane, overlap)
    if z_threshold is not None and len(frags) > 1:
        _rim_fill(affs, frags, membrane, z_threshold, scoring, workers)
    return _waterz(affs, frags, values, scoring)


def _waterz(affs, frags, thresholds, scoring):
    """waterz's agglomeration of ``frags`` (uint64 1..F, C-contiguous; overwritten) over
    ``affs`` ((3, z, y, x) float32) at each of ``thresholds``: one label volume per threshold,
    in the order given, relabelled 1..K in order of first appearance (see :func:`agglomerate`)."""
    import fastremap
    import waterz

    top = int(frags.max()) if frags.size else 0
    order = sorted(set(thresholds))
    results = {}
    with _quiet_stdout():
        segmentations = waterz.agglomerate(affs, order, fragments=frags,
                                           scoring_function=SCORINGS[scoring])
        for threshold, segmentation in zip(order, segmentations):
            # waterz keeps merging in this array: copy it, at the size the IDs need
            labels = segmentation.astype(label_dtype(top))
            labels, mapping = fastremap.renumber(labels, preserve_zero=True, in_place=True)
            count = len(mapping) - (0 in mapping)
            results[threshold] = labels.astype(label_dtype(count), copy=False)
    return [results[t] for t in thresholds]


def small_objects(labels, min_size=100):
    """How many objects are smaller than ``min_size`` voxels, and their share of voxels.

    Parameters
    ----------
    labels : numpy.ndarray
        (z, y, x) integer labels; 0 is background and not an object.
    min_size : int
        Objects with fewer voxels count as small.

    Returns
    -------
    dict
        ``objects`` (count of labels > 0), ``small_objects``, ``small_voxel_share``
        (voxels of small objects / all voxels).
    """
    import fastremap

    labels = np.asarray(labels)
    ids, counts = fastremap.unique(labels, return_counts=True)
    counts = counts[ids != 0]
    small = counts < min_size
    return {
        "objects": int(len(counts)),
        "small_objects": int(small.sum()),
        "small_voxel_share": float(counts[small].sum() / labels.size) if labels.size else 0.0,
    }
