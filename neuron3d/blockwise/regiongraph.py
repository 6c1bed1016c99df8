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

Scorings: ``median`` and ``median_max`` (histograms of counts, additive) and ``mean``.
waterz's ``MeanAffinityProvider`` keeps a running float32 mean over an edge's contacts in
its scan order (z, y, x, then the z, y, x neighbour), which does not add up across blocks
bit for bit; but every edge lies in one block (in-plane edges in one slice, between-slice
edges in one pair of slices), so :func:`block_edges` replays the running mean there in
that order (:func:`running_means`), and :func:`merge` the count-weighted float32 mean of
two edges that meet.

Building a block's edges is vectorised (numpy sorting and ``bincount``); the merging is a
Python loop over merges (each one re-scores the merged region's edges: sequential by
nature), with :mod:`heapq` (C) for the queue and numpy for each histogram.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["BLOCKWISE_SCORINGS", "RegionGraph", "block_edges", "concatenate", "merge",
           "running_means", "segment_labels"]

#: Bins of waterz's histograms.
BINS = 256
#: waterz's quantile for the median scorings (``HistogramQuantileAffinity<..., 50, ...>``).
QUANTILE = 50
#: The scorings the blockwise agglomeration replays (all of waterz's that the project uses).
BLOCKWISE_SCORINGS = ("median", "mean", "median_max")

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
    """Edges (u < v, in the order of (u, v)), each with a sparse 256-bin histogram of its
    contacts' affinities or, for the ``mean`` scoring, their mean.

    Attributes
    ----------
    u, v : numpy.ndarray
        (E,) uint64 fragment IDs of each edge's ends.
    indptr : numpy.ndarray
        (E + 1,) int64: edge e's histogram is ``bins[indptr[e]:indptr[e + 1]]`` (increasing
        bin numbers) with ``counts`` at the same positions.  A mean graph has one entry per
        edge (``indptr`` is 0..E, ``bins`` 0).
    bins : numpy.ndarray
        (nnz,) uint8 bin numbers.
    counts : numpy.ndarray
        (nnz,) int64 contact counts (waterz counts in C ``int``; a mean's in ``size_t``).
    means : numpy.ndarray or None
        (E,) float32 mean affinity of each edge's contacts (waterz's running mean), or None
        for a histogram graph.
    """

    __slots__ = ("u", "v", "indptr", "bins", "counts", "means")

    def __init__(self, u, v, indptr, bins, counts, means=None):
        self.u, self.v, self.indptr, self.bins, self.counts = u, v, indptr, bins, counts
        self.means = means

    def __len__(self):
        return len(self.u)

    @property
    def nbytes(self):
        """Bytes the graph's arrays hold."""
        arrays = (self.u, self.v, self.indptr, self.bins, self.counts, self.means)
        return sum(a.nbytes for a in arrays if a is not None)

    @classmethod
    def empty(cls):
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(1, np.int64),
                   np.zeros(0, np.uint8), np.zeros(0, np.int64))


def _contacts(frags, affs, own, z_pairs, scan_order=False):
    """Contacts of a (z, y, x) fragment block: (u, v, affinity) of every pair of face
    neighbours with different fragments, in-plane in the first ``own`` slices and between
    slice k and k + 1 for k < ``z_pairs``; ``affs`` is waterz's (3, z, y, x) layout for the
    block.  With ``scan_order``, a fourth array gives each contact's place in waterz's scan
    (its voxel's C-order index in the block, then the channel: z, y, x)."""
    us, vs, values, places = [], [], [], []
    index = np.arange(frags.size, dtype=np.int64).reshape(frags.shape) if scan_order else None
    pairs = [  # (the voxel, its neighbour before it, the affinity, waterz's channel)
        (np.s_[:own, 1:, :], np.s_[:own, :-1, :], 1),
        (np.s_[:own, :, 1:], np.s_[:own, :, :-1], 2),
    ]
    if z_pairs:
        pairs.append((np.s_[1:z_pairs + 1], np.s_[:z_pairs], 0))
    for here, before, channel in pairs:
        a, b = frags[here], frags[before]
        if own == 0 or a.size == 0:
            continue
        differ = a != b
        a, b = a[differ], b[differ]
        us.append(np.minimum(a, b))
        vs.append(np.maximum(a, b))
        values.append(affs[channel][here][differ])
        if scan_order:
            places.append(index[here][differ] * 3 + channel)
    if not us:
        empty = (np.zeros(0, np.uint64), np.zeros(0, np.uint64), np.zeros(0, np.float32))
        return empty + ((np.zeros(0, np.int64),) if scan_order else ())
    contacts = (np.concatenate(us), np.concatenate(vs), np.concatenate(values))
    return contacts + ((np.concatenate(places),) if scan_order else ())


def running_means(values, starts, counts):
    """waterz's running mean ``(a + mean * n) / (n + 1)`` (float32, ``n`` a ``size_t``
    converted to float) of each run ``values[starts[e]:starts[e] + counts[e]]`` in order,
    vectorised across the runs: (E,) float32."""
    values = np.asarray(values, dtype=np.float32)
    order = np.argsort(-np.asarray(counts), kind="stable")  # the longest runs first
    start, count = np.asarray(starts)[order], np.asarray(counts)[order]
    mean = np.zeros(len(order), np.float32)
    negative = -count
    for n in range(int(count[0]) if len(count) else 0):
        k = int(np.searchsorted(negative, -n, side="left"))  # runs longer than n
        mean[:k] = (values[start[:k] + n] + mean[:k] * np.float32(n)) / np.float32(n + 1)
    out = np.empty_like(mean)
    out[order] = mean
    return out


def block_edges(frags, affs, own, z_pairs, scoring="median"):
    """The region graph of a block of whole slices (see :func:`_contacts`).

    Parameters
    ----------
    frags : numpy.ndarray
        (z, y, x) uint64 fragment IDs (global: per-slice fragments of different slices
        differ, and 3-D fragments of different blocks).
    affs : numpy.ndarray
        (3, z, y, x) float32 affinities of the block in waterz's layout (the between-slice
        channel after the rim fill of :mod:`neuron3d.agglomerate`).
    own : int
        The block's own slices (the first ``own``; the rest is the next block's first
        slice, read for the between-slice contacts): their in-plane contacts are counted.
    z_pairs : int
        How many between-slice contact planes to count (slices k, k + 1 for k < z_pairs):
        the block's slices, less one at the volume's last slice.
    scoring : {"median", "mean", "median_max"}
        ``median_max`` keeps one count at each edge's highest bin (waterz's
        ``InitWithMax``); ``mean`` keeps each edge's running mean and contact count.

    Returns
    -------
    RegionGraph
        Edges in (u, v) order.
    """
    if scoring not in BLOCKWISE_SCORINGS:
        raise ValueError(f"blockwise agglomeration scores {' or '.join(BLOCKWISE_SCORINGS)}, "
                         f"got --scoring {scoring}")
    contacts = _contacts(frags, affs, own, z_pairs, scan_order=scoring == "mean")
    u, v = contacts[:2]
    if not len(u):
        return RegionGraph.empty()
    base = u.min()
    span = int(max(u.max(), v.max()) - base) + 1
    if span * span * BINS >= 2**63:
        raise ValueError(f"a block holds {span} fragment IDs, too many to pair (use fewer "
                         "slices per block, --chunks)")
    pair = (u - base).astype(np.int64) * span + (v - base).astype(np.int64)
    means = None
    if scoring == "mean":  # each edge's contacts in waterz's scan order, then their mean
        order = np.lexsort((contacts[3], pair))
        pair = pair[order]
        starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
        counts = np.diff(np.r_[starts, len(pair)]).astype(np.int64)
        means = running_means(contacts[2][order], starts, counts)
        bins = np.zeros(len(starts), np.uint8)
        indptr = np.arange(len(starts) + 1, dtype=np.int64)
    else:
        keys, counts = np.unique(pair * BINS + discretize(contacts[2]), return_counts=True)
        pair = keys // BINS
        bins = (keys % BINS).astype(np.uint8)
        starts = np.flatnonzero(np.r_[True, pair[1:] != pair[:-1]])
        if scoring == "median_max":  # one count at the highest bin of each edge
            last = np.r_[starts[1:], len(pair)] - 1
            bins, counts = bins[last], np.ones(len(last), np.int64)
            indptr = np.arange(len(last) + 1, dtype=np.int64)
        else:
            indptr = np.r_[starts, len(pair)].astype(np.int64)
            counts = counts.astype(np.int64)
    edge_pair = pair[starts]
    eu = (edge_pair // span).astype(np.uint64) + base
    ev = (edge_pair % span).astype(np.uint64) + base
    return RegionGraph(eu, ev, indptr, bins, counts, means)


def concatenate(graphs):
    """One graph of blocks' graphs given in block order (their edges then stay in (u, v)
    order: a block's edges start in its own slices, after the previous block's)."""
    graphs = [g for g in graphs if len(g)]
    if not graphs:
        return RegionGraph.empty()
    offsets = np.cumsum([0] + [len(g.bins) for g in graphs])
    indptr = np.concatenate([[0]] + [g.indptr[1:] + o for g, o in zip(graphs, offsets)])
    means = None if graphs[0].means is None else np.concatenate([g.means for g in graphs])
    return RegionGraph(np.concatenate([g.u for g in graphs]),
                       np.concatenate([g.v for g in graphs]), indptr.astype(np.int64),
                       np.concatenate([g.bins for g in graphs]),
                       np.concatenate([g.counts for g in graphs]), means)


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


class _Histograms:
    """The histogram scorings' edge statistics in :func:`merge`: waterz's
    ``HistogramQuantileProvider`` (dense histograms made when an edge is first merged into)."""

    def __init__(self, graph):
        self.graph, self.hist = graph, {}

    def initial_scores(self):
        return [_SCORE[b] for b in _initial_bins(self.graph).tolist()]

    def _histogram(self, e):
        h = self.hist.get(e)
        if h is None:
            h = self.hist[e] = _dense(self.graph, e)
        return h

    def combine(self, keep, drop):
        self.hist[keep] = self._histogram(keep) + self._histogram(drop)
        self.hist.pop(drop, None)

    def score(self, e):
        return _score_of(self._histogram(e))


class _Means:
    """The ``mean`` scoring's edge statistics in :func:`merge`: waterz's
    ``MeanAffinityProvider`` (the count-weighted mean of two edges, in float32) scored by
    ``OneMinus`` (``1.0 - mean`` in double, stored as float)."""

    def __init__(self, graph):
        self.mean = graph.means.tolist()
        self.count = graph.counts.tolist()

    def initial_scores(self):
        return [float(np.float32(1.0 - m)) for m in self.mean]

    def combine(self, keep, drop):
        f32 = np.float32
        nk, nd = self.count[keep], self.count[drop]
        total = (f32(self.mean[drop]) * f32(nd) + f32(self.mean[keep]) * f32(nk))
        self.mean[keep] = float(total / f32(nd + nk))
        self.count[keep] = nd + nk

    def score(self, e):
        return float(np.float32(1.0 - self.mean[e]))


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
    stats = _Histograms(graph) if graph.means is None else _Means(graph)
    scores = stats.initial_scores()
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
                scores[e] = new = stats.score(e)
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
                    stats.combine(ane, ne)
                    deleted[ne] = 1
                    stale[ane] = 1
                else:  # keep b's edge, moved to a
                    stats.combine(ne, ane)
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
