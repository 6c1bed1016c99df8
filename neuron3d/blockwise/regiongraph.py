"""The region graph of the agglomeration, built from parts, and waterz's merging replayed on it.

waterz (0.10) takes affinities and fragments and builds its region graph itself; it cannot
take a graph built elsewhere.  Its graph is canonical, though: one edge per pair of touching
fragments (u < v), numbered in the order of (u, v), each with the 256-bin histogram of the
affinities on its contacts (counts, so the order in which contacts are added does not
matter).  So a graph built from blocks of whole slices, concatenated in block order, is
waterz's graph, and :func:`merge` replays waterz's ``IterativeRegionMerging`` on it
exactly: the same priority queue (``std::priority_queue`` and :mod:`heapq` sift alike, and
ties between equal scores fall the same way), the same stale and deleted edges, the same
choice of the edge that survives when two regions' edges to a neighbour meet, the same
quantile of the merged histograms (``HistogramQuantileProvider``), in float32 as waterz
scores.  So the segmentation equals waterz's bit for bit (tests/test_blockwise_agglomerate.py
checks it against :func:`neuron3d.agglomerate.agglomerate`).

Scorings: ``median`` and ``median_max`` (histograms).  ``mean`` is a running float32 mean
over the contacts in waterz's scan order, which is not additive bit for bit; it runs only
in memory.

Building a block's edges is vectorised (numpy sorting and ``bincount``); the merging is a
Python loop over merges (each one re-scores the merged region's edges: sequential by
nature), with :mod:`heapq` (C) for the queue and numpy for each histogram.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["BLOCKWISE_SCORINGS", "RegionGraph", "block_edges", "concatenate", "merge",
           "segment_labels"]

#: Bins of waterz's histograms.
BINS = 256
#: waterz's quantile for the median scorings (``HistogramQuantileAffinity<..., 50, ...>``).
QUANTILE = 50
#: The scorings whose graph is additive (histograms of counts).
BLOCKWISE_SCORINGS = ("median", "median_max")

# waterz's score of a histogram whose quantile is in bin b: OneMinus of undiscretize, in
# float32 (undiscretize returns ((float)b + 0.5) / 256 as a float; 1.0 - x is cast back).
_SCORE = [float(np.float32(1.0 - float(np.float32((b + 0.5) / BINS)))) for b in range(BINS + 1)]


def discretize(values):
    """waterz's ``discretize<int>(value, 256)`` of float32 ``values``: the bin of each."""
    values = np.asarray(values, dtype=np.float32)
    bins = (values * np.float32(BINS)).astype(np.int64)
    bins = np.minimum(bins, BINS - 1)
    bins[~(values > 0)] = 0
    bins[values >= 1] = BINS - 1
    return bins


class RegionGraph:
    """Edges (u < v, in the order of (u, v)) with a sparse 256-bin histogram each.

    Attributes
    ----------
    u, v : numpy.ndarray
        (E,) uint64 fragment IDs of each edge's ends.
    indptr : numpy.ndarray
        (E + 1,) int64: edge e's histogram is ``bins[indptr[e]:indptr[e + 1]]`` (increasing
        bin numbers) with ``counts`` at the same positions.
    bins : numpy.ndarray
        (nnz,) uint8 bin numbers.
    counts : numpy.ndarray
        (nnz,) int64 contact counts (waterz counts in C ``int``).
    """

    __slots__ = ("u", "v", "indptr", "bins", "counts")

    def __init__(self, u, v, indptr, bins, counts):
        self.u, self.v, self.indptr, self.bins, self.counts = u, v, indptr, bins, counts

    def __len__(self):
        return len(self.u)

    @property
    def nbytes(self):
        """Bytes the graph's arrays hold."""
        return sum(a.nbytes for a in (self.u, self.v, self.indptr, self.bins, self.counts))

    @classmethod
    def empty(cls):
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(1, np.int64),
                   np.zeros(0, np.uint8), np.zeros(0, np.int64))


def _contacts(frags, affs, own, z_pairs):
    """Contacts of a (z, y, x) fragment block: (u, v, bin) of every pair of face neighbours
    with different fragments, in-plane in the first ``own`` slices and between slice k and
    k + 1 for k < ``z_pairs``; ``affs`` is waterz's (3, z, y, x) layout for the block."""
    us, vs, values = [], [], []
    depth = own
    pairs = [
        (frags[:own, 1:, :], frags[:own, :-1, :], affs[1, :own, 1:, :]),
        (frags[:own, :, 1:], frags[:own, :, :-1], affs[2, :own, :, 1:]),
    ]
    if z_pairs:
        pairs.append((frags[1:z_pairs + 1], frags[:z_pairs], affs[0, 1:z_pairs + 1]))
    for here, before, aff in pairs:
        if depth == 0 or here.size == 0:
            continue
        differ = here != before
        a, b = here[differ], before[differ]
        us.append(np.minimum(a, b))
        vs.append(np.maximum(a, b))
        values.append(aff[differ])
    if not us:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.int64)
    return np.concatenate(us), np.concatenate(vs), discretize(np.concatenate(values))


def block_edges(frags, affs, own, z_pairs, scoring="median"):
    """The region graph of a block of whole slices (see :func:`_contacts`).

    Parameters
    ----------
    frags : numpy.ndarray
        (z, y, x) uint64 fragment IDs (global; fragments of different slices differ).
    affs : numpy.ndarray
        (3, z, y, x) float32 affinities of the block in waterz's layout (the between-slice
        channel after the rim fill of :mod:`neuron3d.agglomerate`).
    own : int
        The block's own slices (the first ``own``; the rest is the next block's first
        slice, read for the between-slice contacts): their in-plane contacts are counted.
    z_pairs : int
        How many between-slice contact planes to count (slices k, k + 1 for k < z_pairs):
        the block's slices, less one at the volume's last slice.
    scoring : {"median", "median_max"}
        ``median_max`` keeps one count at each edge's highest bin (waterz's
        ``InitWithMax``).

    Returns
    -------
    RegionGraph
        Edges in (u, v) order.
    """
    if scoring not in BLOCKWISE_SCORINGS:
        raise ValueError(f"blockwise agglomeration scores {' or '.join(BLOCKWISE_SCORINGS)}, "
                         f"got --scoring {scoring}")
    u, v, bins = _contacts(frags, affs, own, z_pairs)
    if not len(u):
        return RegionGraph.empty()
    base = u.min()
    span = int(max(u.max(), v.max()) - base) + 1
    if span * span * BINS >= 2**63:
        raise ValueError(f"a block holds {span} fragment IDs, too many to pair (use fewer "
                         "slices per block, --chunks)")
    code = ((u - base).astype(np.int64) * span + (v - base).astype(np.int64)) * BINS + bins
    keys, counts = np.unique(code, return_counts=True)
    pair = keys // BINS
    bins = (keys % BINS).astype(np.uint8)
    starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
    edge_pair = pair[starts]
    if scoring == "median_max":  # one count at the highest bin of each edge
        last = np.r_[starts[1:], len(pair)] - 1
        bins, counts = bins[last], np.ones(len(last), np.int64)
        indptr = np.arange(len(last) + 1, dtype=np.int64)
    else:
        indptr = np.r_[starts, len(pair)].astype(np.int64)
        counts = counts.astype(np.int64)
    eu = (edge_pair // span).astype(np.uint64) + base
    ev = (edge_pair % span).astype(np.uint64) + base
    return RegionGraph(eu, ev, indptr, bins, counts)


def concatenate(graphs):
    """One graph of blocks' graphs given in block order (their edges then stay in (u, v)
    order: a block's edges start in its own slices, after the previous block's)."""
    graphs = [g for g in graphs if len(g)]
    if not graphs:
        return RegionGraph.empty()
    offsets = np.cumsum([0] + [len(g.bins) for g in graphs])
    indptr = np.concatenate([[0]] + [g.indptr[1:] + o for g, o in zip(graphs, offsets)])
    return RegionGraph(np.concatenate([g.u for g in graphs]),
                       np.concatenate([g.v for g in graphs]), indptr.astype(np.int64),
                       np.concatenate([g.bins for g in graphs]),
                       np.concatenate([g.counts for g in graphs]))


def _wrap_int32(values):
    """C ``int`` arithmetic's wrap-around (waterz computes ``Q * sum`` in an int)."""
    return ((np.asarray(values, dtype=np.int64) + 2**31) % 2**32) - 2**31


def _pivots(sums):
    """waterz's 1-based pivot ``Q * sum / 100 + 1`` (C int: wraps, divides toward 0)."""
    product = _wrap_int32(QUANTILE * np.asarray(sums, dtype=np.int64))
    return np.where(product < 0, -((-product) // 100), product // 100) + 1


def _initial_bins(graph):
    """The quantile bin of every edge's histogram, vectorised."""
    if not len(graph):
        return np.zeros(0, np.int64)
    cumulative = np.cumsum(graph.counts)
    before = np.r_[0, cumulative][graph.indptr[:-1]]
    sums = cumulative[graph.indptr[1:] - 1] - before
    pivots = _pivots(sums)
    positions = np.searchsorted(cumulative, before + np.maximum(pivots, 1), side="left")
    return graph.bins[positions].astype(np.int64)


def _dense(graph, e):
    hist = np.zeros(BINS, np.int64)
    lo, hi = graph.indptr[e], graph.indptr[e + 1]
    hist[graph.bins[lo:hi]] = graph.counts[lo:hi]
    return hist


def _score_of(hist):
    pivot = int(_pivots(int(hist.sum())))
    if pivot < 1:
        return _SCORE[0]
    return _SCORE[int(np.searchsorted(np.cumsum(hist), pivot, side="left"))]


class _Entry(float):
    """A queue entry: compares by its score only (waterz's ``Entry::operator>``)."""

    __slots__ = ("edge",)


def merge(graph, nodes, thresholds):
    """waterz's ``IterativeRegionMerging`` on ``graph``, for each threshold in turn.

    Parameters
    ----------
    graph : RegionGraph
        Edges in (u, v) order (:func:`block_edges`, :func:`concatenate`).
    nodes : int
        Number of nodes: the largest fragment ID + 1.
    thresholds : sequence of float
        Merge thresholds, in increasing order (waterz's order); each merges on from the
        previous one's state.

    Returns
    -------
    list of numpy.ndarray
        Per threshold, the root of every node (``nodes`` uint64 entries): the smallest
        fragment ID of its region, as waterz labels it.
    """
    count = len(graph)
    u = graph.u.tolist()
    v = graph.v.tolist()
    scores = [_SCORE[b] for b in _initial_bins(graph).tolist()]
    hist = {}  # dense histograms of the edges merged into, made when first needed
    stale = bytearray(count)
    deleted = bytearray(count)
    adjacency = {}
    for e, (a, b) in enumerate(zip(u, v)):
        adjacency.setdefault(a, {})[b] = e
        adjacency.setdefault(b, {})[a] = e
    parent = np.arange(nodes, dtype=np.uint64)
    queue = []
    merged_until = None
    roots = []

    def histogram(e):
        h = hist.get(e)
        if h is None:
            h = hist[e] = _dense(graph, e)
        return h

    def push(e, score):
        entry = _Entry(score)
        entry.edge = e
        heapq.heappush(queue, entry)

    for threshold in thresholds:
        threshold = float(np.float32(threshold))  # waterz's ScoreValue
        if merged_until is not None and threshold <= merged_until:
            roots.append(_roots(parent))
            continue
        if merged_until is None:
            for e in range(count):
                push(e, scores[e])
        while queue:
            e = queue[0].edge
            score = scores[e]
            if score >= threshold:
                break
            heapq.heappop(queue)
            if deleted[e]:
                continue
            if stale[e]:
                scores[e] = new = _score_of(histogram(e))
                push(e, new)
                stale[e] = 0
                continue
            a, b = u[e], v[e]
            parent[b] = a
            mine = adjacency[a]
            del mine[b]
            for n, ne in adjacency.pop(b).items():
                if ne == e:
                    continue
                theirs = adjacency[n]
                del theirs[b]
                ane = mine.get(n)
                if ane is None:  # a neighbour of b only: the edge moves to a
                    mine[n] = ne
                    theirs[a] = ne
                    u[ne], v[ne] = (a, n) if a < n else (n, a)
                elif scores[ne] > scores[ane]:  # keep a's edge
                    hist[ane] = histogram(ane) + histogram(ne)
                    hist.pop(ne, None)
                    deleted[ne] = 1
                    stale[ane] = 1
                else:  # keep b's edge, moved to a
                    hist[ne] = histogram(ne) + histogram(ane)
                    hist.pop(ane, None)
                    deleted[ane] = 1
                    mine[n] = ne
                    theirs[a] = ne
                    u[ne], v[ne] = (a, n) if a < n else (n, a)
                    stale[ne] = 1
        merged_until = threshold
        roots.append(_roots(parent))
    return roots


def _roots(parent):
    """Every node's root, following parents (vectorised path halving)."""
    roots = parent.copy()
    while True:
        up = roots[roots]
        if np.array_equal(up, roots):
            return roots
        roots = up


def segment_labels(roots, first_index):
    """The lookup table from fragment ID to final label, numbered as the in-memory path does.

    Parameters
    ----------
    roots : numpy.ndarray
        (F + 1,) root of every fragment ID (entry 0 unused), from :func:`merge`.
    first_index : numpy.ndarray
        (F + 1,) uint64 C-order index of each fragment's first voxel in the volume (entry 0
        unused).

    Returns
    -------
    table : numpy.ndarray
        (F + 1,) labels 1..K in the order of each region's first voxel (the numbering of
        ``fastremap.renumber``), entry 0 is 0; dtype :func:`neuron3d.labels.label_dtype` (K).
    count : int
        K.
    """
    from ..labels import label_dtype

    none = np.iinfo(np.uint64).max
    fragment_roots = roots[1:].astype(np.int64)
    first = np.full(len(roots), none, dtype=np.uint64)
    np.minimum.at(first, fragment_roots, first_index[1:])
    present = np.flatnonzero(first != none)
    order = present[np.argsort(first[present], kind="stable")]
    count = len(order)
    dtype = label_dtype(count)
    rank = np.zeros(len(roots), dtype=dtype)
    rank[order] = np.arange(1, count + 1, dtype=dtype)
    table = rank[fragment_roots]
    return np.r_[np.zeros(1, dtype), table].astype(dtype, copy=False), count
