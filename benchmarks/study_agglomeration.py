"""The agglomeration's options, and what limits it, on the predictions of a finished run.

    python -m benchmarks.study_agglomeration --run fm_views_5m
    python -m benchmarks.study_agglomeration --run fm_views_5m --quadrant d --limits
    python -m benchmarks.study_agglomeration --run fm_views_5m --learned
    python -m benchmarks.study_agglomeration --run fm_views_5m --blocks 125 64 32 16
    python -m benchmarks.study_agglomeration --run fm_views_5m --variants

Reads ``results/<run>``'s predicted membranes (``datasets/membrane_predicted_<q>.tif``) and
un-thinned overlaps (``P5_membrane_overlap_<q>/images``) of a quadrant (d by default, where
choices are made) and its ground-truth labels, agglomerates with each option set at the
thresholds 0.3-0.9 and prints, for each, the threshold of the lowest VOI split + merge
against the ground truth with its adapted Rand error, VOI and object count.  ``--limits``
prints the same for ground-truth membranes and/or overlaps in place of the predictions.
``--learned`` trains the learned agglomeration (:mod:`neuron3d.learned`) on d and applies it to
c, for per-slice and 3-D fragments, with and without EM features, at two initial thresholds,
beside waterz's sweep of d and its choice applied to c.  ``--blocks Z ...`` measures what the
block faces of the blockwise ``--fragments 3d`` cost: 3-D fragments cut per block of Z slices
(:func:`neuron3d.blockwise.block_fragments`), the threshold chosen on d, c reported.
``--variants`` tries, with 3-D fragments, other seeds (h-maxima of the distance transform) and
other z affinities (from the membranes instead of the overlaps; from the views that contain
each axis, NN-3's three views predicted apart with the run's checkpoint, about 2 minutes).
``--dust T`` merges, after the agglomeration of 3-D fragments at threshold T (the run's choice on
d), every segment under a size into a neighbour (the lowest mean membrane on their contact, or
the largest contact), smallest first, on d and c (:func:`dust_merge`).  ``--seeds`` scores the
3-D fragments themselves (before any merge) with the default seeds and with seeds at the
h-maxima of the distance transform (h = 1 and 0.5), and their agglomeration at d's threshold
of lowest VOI, on d and c (seconds).
Seconds per row on a 125^3 quadrant; measures quality, not time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

#: Option sets (keywords of neuron3d.agglomerate.agglomerate; "fragments_3d": (seeds below,
#: sigma, min distance) of one watershed of the membrane volume instead of one per slice).
OPTIONS = [
    {}, {"seed_threshold": 0.1}, {"seed_threshold": 0.3}, {"sigma": 1.0}, {"min_distance": 9},
    {"min_distance": 3}, {"z_threshold": 0.5}, {"z_threshold": None}, {"scoring": "mean"},
    {"scoring": "median_max"}, {"fragments_3d": (0.2, 0.0, 5)}, {"fragments_3d": (0.3, 0.0, 5)},
]
GRID = [round(t, 2) for t in np.arange(0.3, 0.91, 0.05)]


def best_by_voi(labels, membrane, overlap, thresholds=GRID, **options):
    """(threshold, scores) of the lowest VOI split + merge over ``thresholds``."""
    from neuron3d.agglomerate import agglomerate, fragments
    from neuron3d.metrics import evaluate

    if "fragments_3d" in options:
        options["fragment_ids"] = fragments(membrane, *options.pop("fragments_3d"), mode="3d")
    best = None
    for t, volume in zip(thresholds, agglomerate(membrane, overlap, thresholds, workers=1,
                                                 **options)):
        scores = evaluate(labels, volume)
        scores["objects"] = int(volume.max())
        if best is None or scores["voi_split"] + scores["voi_merge"] < \
                best[1]["voi_split"] + best[1]["voi_merge"]:
            best = (t, scores)
    return best


def row(name, best):
    t, s = best
    return (f"| {name} | {t:.2f} | {s['adapted_rand_error']:.3f} | {s['voi_split']:.2f} / "
            f"{s['voi_merge']:.2f} ({s['voi_split'] + s['voi_merge']:.2f}) | {s['objects']} |")


def main(argv=None):
    from neuron3d import labels as L
    from neuron3d.io import read_labels, read_stack

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished run under --results")
    p.add_argument("--results", default="results")
    p.add_argument("--quadrant", default="d", choices=tuple("abcd"))
    p.add_argument("--limits", action="store_true",
                   help="ground-truth membranes and/or overlaps instead of the options")
    p.add_argument("--learned", action="store_true",
                   help="the learned agglomeration trained on d, applied to c")
    p.add_argument("--blocks", type=int, nargs="+",
                   help="3-D fragments per block of these many slices, chosen on d, c reported")
    p.add_argument("--variants", action="store_true",
                   help="3-D fragments with other seeds and z affinities, chosen on d")
    p.add_argument("--dust", type=float, metavar="T",
                   help="segments under a size merged into a neighbour after the agglomeration "
                        "of 3-D fragments at threshold T, on d and c")
    p.add_argument("--seeds", action="store_true",
                   help="the 3-D fragments' own scores with default and h-maxima seeds, and "
                        "their agglomeration chosen on d")
    args = p.parse_args(argv)
    if args.seeds:
        return seeds_table(Path(args.results) / args.run)
    if args.dust is not None:
        return dust_table(Path(args.results) / args.run, args.dust)
    if args.variants:
        return variants_table(Path(args.results) / args.run)
    if args.blocks:
        return blocks_table(Path(args.results) / args.run, args.blocks)
    if args.learned:
        return learned_table(Path(args.results) / args.run)
    run, q = Path(args.results) / args.run, args.quadrant
    membrane = read_stack(run / "datasets" / f"membrane_predicted_{q}.tif")
    overlap = read_stack(run / f"P5_membrane_overlap_{q}" / "images", channel=0)
    labels = read_labels(run / "datasets" / f"label_{q}.tif")
    print(f"{args.run}, quadrant {q}: each at its lowest VOI split + merge (thresholds "
          f"{GRID[0]}-{GRID[-1]})\n")
    print("| inputs / options | threshold | adapted Rand error | VOI split / merge (sum) | "
          "objects |\n|---|---|---|---|---|")
    if args.limits:
        true_membrane = L.membrane(labels).astype(np.float32)
        true_overlap = L.overlap(labels, true_membrane > 0).astype(np.float32)
        grid = [round(t, 2) for t in np.arange(0.05, 0.96, 0.05)]
        for name, m, o in (("predicted / predicted", membrane, overlap),
                           ("ground truth / predicted", true_membrane, overlap),
                           ("ground truth / ground truth", true_membrane, true_overlap)):
            print(row(name, best_by_voi(labels, m, o, grid)), flush=True)
        return 0
    for options in OPTIONS:
        name = ", ".join(f"{k} {v}" for k, v in options.items()) or "the defaults"
        print(row(name, best_by_voi(labels, membrane, overlap, **dict(options))), flush=True)
    return 0


def _quadrant(run, q):
    from neuron3d.io import read_labels, read_stack

    return (read_stack(run / "datasets" / f"membrane_predicted_{q}.tif"),
            read_stack(run / f"P5_membrane_overlap_{q}" / "images", channel=0),
            read_stack(run / "datasets" / f"em_{q}.tif", channel=0),
            read_labels(run / "datasets" / f"label_{q}.tif"))


def _cells(s):
    return (f"{s['adapted_rand_error']:.3f}, {s['voi_split']:.2f} / {s['voi_merge']:.2f} "
            f"({s['voi_split'] + s['voi_merge']:.2f}), {s['predicted_objects']}")


def blocks_table(run, depths):
    """Blockwise 3-D fragments (one watershed per block of Z slices), in memory."""
    from neuron3d.agglomerate import agglomerate
    from neuron3d.blockwise import block_fragments
    from neuron3d.learned import THRESHOLDS
    from neuron3d.metrics import evaluate

    d, c = _quadrant(run, "d"), _quadrant(run, "c")
    print(f"{run.name}: 3-D fragments per block, threshold chosen on d by VOI (adapted Rand "
          "error vs ground truth, VOI split / merge (sum), objects)\n")
    print("| blocks of | d: threshold | d | c |\n|---|---|---|---|")
    for depth in depths:
        t, best = best_by_voi(d[3], d[0], d[1], list(THRESHOLDS),
                              fragment_ids=block_fragments(d[0], depth))
        (seg,) = agglomerate(c[0], c[1], [t], fragment_ids=block_fragments(c[0], depth))
        print(f"| {depth} slices | {t:.2f} | {_cells(best)} | {_cells(evaluate(c[3], seg))} |",
              flush=True)
    return 0


def h_maxima_fragments(membrane, h, seed_threshold=0.2):
    """3-D watershed fragments seeded at the h-maxima of the distance transform of
    ``membrane < seed_threshold`` (a seed per basin whose depth rises ``h`` above its saddle,
    where the default seeds are maxima ``min_distance`` apart), each seedless component at its
    deepest voxel."""
    import fastremap
    from scipy import ndimage
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    mask = membrane < seed_threshold
    distance = ndimage.distance_transform_edt(mask).astype(np.float32)
    peaks = h_maxima(distance, h).astype(bool) & mask
    components, count = ndimage.label(mask)
    seeded = np.zeros(count + 1, dtype=bool)
    seeded[components[peaks]] = True
    seeded[0] = True
    deepest = np.zeros(count + 1, dtype=np.float32)
    np.maximum.at(deepest, components, distance)
    peaks |= ~seeded[components] & (distance == deepest[components])
    markers = ndimage.label(peaks, structure=np.ones((3, 3, 3), dtype=bool))[0]
    labels = watershed(membrane, markers)
    return np.ascontiguousarray(fastremap.renumber(labels)[0], dtype=np.uint64)


def view_membranes(run, q):
    """NN-3's three views of quadrant ``q`` predicted apart (TTA, as ``--views`` does before
    averaging): {"xy", "xz", "yz"} -> (z, y, x) float32 in [0, 1]."""
    from imagetranslation import data as D
    from imagetranslation.config import as_config
    from imagetranslation.inference import VIEWS, load_for_inference, predict_tta
    from imagetranslation.models import stride_of

    options = as_config({"checkpoint": str(run / "T3_em_membrane_a"), "tta": True,
                         "mode": "test"})
    generator, options = load_for_inference(options.checkpoint, options)
    inputs = D.load_pairs(run / "datasets" / "combined" / f"em_membrane_{q}",
                          options.which_direction)[0]
    volume, out = D.to_model_range(inputs), {}
    for name, axes in VIEWS.items():
        view = np.transpose(volume, axes + (3,))
        pred = np.stack([predict_tta(generator, np.ascontiguousarray(s), stride_of(options))
                         for s in view])
        out[name] = D.from_model_range(np.transpose(pred, axes + (3,)))[..., 0] / np.float32(255)
    return out


def _fragment_affinities(membrane, overlap, frags):
    """The agglomeration's affinities for ``frags`` (z from the overlaps, with its default z
    rule 0.3 and median scoring), from inputs that passed
    :func:`neuron3d.agglomerate.check_inputs`."""
    from neuron3d import agglomerate as A

    affs = A._affinities(membrane, overlap)
    A._rim_fill(affs, frags, membrane, 0.3, "median")
    return affs


def _chosen_on_d(affs, frags, truth):
    """(threshold, scores) of waterz's median agglomeration of ``frags`` over ``affs`` with the
    lowest VOI split + merge against ``truth`` (then adapted Rand error), over the learned
    module's thresholds."""
    from neuron3d import agglomerate as A
    from neuron3d.learned import THRESHOLDS
    from neuron3d.metrics import evaluate

    grid = list(THRESHOLDS)
    rows = [(t, evaluate(truth, v))
            for t, v in zip(grid, A._waterz(affs, frags.copy(), grid, "median"))]
    return min(rows, key=lambda r: (r[1]["voi_split"] + r[1]["voi_merge"],
                                    r[1]["adapted_rand_error"]))


def variants_table(run):
    """Seeds and z affinities of the agglomeration of 3-D fragments, chosen on d."""
    from neuron3d import agglomerate as A
    from neuron3d.metrics import evaluate

    def edge(m, axis):  # waterz's affinity to the predecessor along axis, from membranes
        a, later, earlier = np.zeros_like(m), [slice(None)] * 3, [slice(None)] * 3
        later[axis], earlier[axis] = slice(1, None), slice(None, -1)
        a[tuple(later)] = 1 - np.maximum(m[tuple(later)], m[tuple(earlier)])
        return a

    def cases(q):
        membrane, overlap, _, truth = _quadrant(run, q)
        membrane, overlap = A.check_inputs(membrane, overlap)
        frags = A.fragments(membrane, mode="3d")
        now = _fragment_affinities(membrane, overlap, frags)
        views = view_membranes(run, q)
        mz, my, mx = ((views[a] + views[b]) / 2 for a, b in (("xz", "yz"), ("xy", "yz"),
                                                             ("xy", "xz")))
        out = {"the default (seeds 0.2, min distance 5; z from the overlaps)": (now, frags)}
        for h in (1.0, 2.0):
            f = h_maxima_fragments(membrane, h)
            out[f"seeds at h-maxima, h = {h:g}"] = (_fragment_affinities(membrane, overlap, f), f)
        out["z from the membranes (1 - max of the two slices)"] = (
            np.stack([edge(membrane, 0), now[1], now[2]]), frags)
        out["each axis from the views that contain it; z from the xz and yz views"] = (
            np.stack([edge(mz, 0), edge(my, 1), edge(mx, 2)]), frags)
        out["y and x from the views that contain them; z from the overlaps"] = (
            np.stack([now[0], edge(my, 1), edge(mx, 2)]), frags)
        return {k: (np.ascontiguousarray(a, dtype=np.float32), f) for k, (a, f) in out.items()}, \
            truth

    (d, truth_d), (c, truth_c) = cases("d"), cases("c")
    print(f"{run.name}: 3-D fragments, waterz median; threshold chosen on d by VOI (adapted Rand "
          "error vs ground truth, VOI split / merge (sum), objects)\n")
    print("| variant | d: threshold | d | c |\n|---|---|---|---|")
    for name, (affs, frags) in d.items():
        t, best = _chosen_on_d(affs, frags, truth_d)
        affs_c, frags_c = c[name]
        seg = A._waterz(affs_c, frags_c.copy(), [t], "median")[0]
        print(f"| {name} | {t:.2f} | {_cells(best)} | {_cells(evaluate(truth_c, seg))} |",
              flush=True)
    return 0


def learned_table(run):
    """Learned agglomeration against waterz: trained (and its threshold chosen) on d, then
    applied to c; waterz's threshold chosen on d by the same criterion (lowest VOI)."""
    from neuron3d import learned
    from neuron3d.agglomerate import agglomerate
    from neuron3d.metrics import evaluate

    d, c = _quadrant(run, "d"), _quadrant(run, "c")
    cells = _cells
    grid = list(learned.THRESHOLDS)
    print(f"{run.name}: trained and chosen on d, applied to c (adapted Rand error vs ground "
          "truth, VOI split / merge (sum), objects)\n")
    print("| fragments | method | d: chosen at | d (cross-validated for learned) | d: oracle | "
          "c |\n|---|---|---|---|---|---|")
    for fragments in ("2d", "3d"):
        t, best = best_by_voi(d[3], d[0], d[1], grid, fragment_mode=fragments)
        (seg,) = agglomerate(c[0], c[1], [t], fragment_mode=fragments)
        print(f"| {fragments} | waterz median | {t:.2f} | {cells(best)} | | "
              f"{cells(evaluate(c[3], seg))} |", flush=True)
        for em in (False, True):
            for initial in (0.2, 0.3):
                model = learned.train(d[0], d[1], d[3], em=d[2] if em else None,
                                      initial_threshold=initial, fragments=fragments)
                chosen = next(r for r in model["sweep"] if r["threshold"] == model["threshold"])
                (seg,) = learned.apply(model, c[0], c[1], em=c[2] if em else None)
                print(f"| {fragments} | learned{' + EM' if em else ''}, initial {initial} | "
                      f"{model['threshold']:.2f} | {cells(chosen['labels'])} | "
                      f"{cells(model['oracle'])} | {cells(evaluate(c[3], seg))} |", flush=True)
    return 0


def dust_merge(labels, membrane, min_size, rule="membrane"):
    """``labels`` with every segment of fewer than ``min_size`` voxels merged into a neighbour,
    smallest first (a merged segment that is still small goes on): the neighbour whose contact
    faces (6-connected) have the lowest mean ``max(membrane)`` of their two voxels (``rule
    "membrane"``) or the most faces (``"contact"``).  A segment without neighbours stays.
    Returns an int64 volume whose IDs are those of the segments merged into."""
    import heapq

    labels = np.asarray(labels, np.int64)
    membrane = np.asarray(membrane, np.float64)
    top = int(labels.max()) + 1
    keys, values = [], []
    for axis in range(3):
        later = tuple(slice(1, None) if a == axis else slice(None) for a in range(3))
        earlier = tuple(slice(None, -1) if a == axis else slice(None) for a in range(3))
        p, q = labels[later], labels[earlier]
        face = p != q
        lo, hi = np.minimum(p[face], q[face]), np.maximum(p[face], q[face])
        keys.append(lo * top + hi)
        values.append(np.maximum(membrane[later][face], membrane[earlier][face]))
    pairs, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    sums = np.bincount(inverse, weights=np.concatenate(values))
    counts = np.bincount(inverse)
    neighbours = {}  # segment -> {neighbour: [sum, count]}
    for pair, total, count in zip(pairs.tolist(), sums.tolist(), counts.tolist()):
        a, b = divmod(pair, top)
        neighbours.setdefault(a, {})[b] = neighbours.setdefault(b, {})[a] = [total, count]
    size = np.bincount(labels.ravel(), minlength=top)
    into = np.arange(top)
    heap = [(int(size[i]), i) for i in range(top) if 0 < size[i] < min_size]
    heapq.heapify(heap)
    while heap:
        n, u = heapq.heappop(heap)
        if into[u] != u or size[u] != n or not neighbours.get(u):
            continue
        edges = neighbours.pop(u)
        if rule == "membrane":
            v = min(edges, key=lambda w: (edges[w][0] / edges[w][1], w))
        else:
            v = max(edges, key=lambda w: (edges[w][1], -w))
        into[u], size[v] = v, size[v] + size[u]
        for w, (total, count) in edges.items():
            del neighbours[w][u]
            if w != v:
                merged = neighbours[v].setdefault(w, [0.0, 0])
                merged[0] += total
                merged[1] += count
                neighbours[w][v] = merged
        if size[v] < min_size:
            heapq.heappush(heap, (int(size[v]), v))
    for i in range(top):  # follow each chain of merges to its end
        j = i
        while into[j] != j:
            j = into[j]
        into[i] = j
    return into[labels]


def dust_table(run, threshold, sizes=(0, 300, 1000, 3000, 10000)):
    """:func:`dust_merge` after the agglomeration of 3-D fragments at ``threshold``, on d and c."""
    from neuron3d.agglomerate import agglomerate, check_inputs
    from neuron3d.metrics import evaluate

    print(f"{run.name}: 3-D fragments at threshold {threshold:g}, then segments under a size "
          "merged into a neighbour (adapted Rand error vs ground truth, VOI split / merge (sum), "
          "objects)\n")
    print("| rule, size | d | c |\n|---|---|---|")
    cells = {}
    for q in "dc":
        membrane, overlap, _, truth = _quadrant(run, q)
        membrane, overlap = check_inputs(membrane, overlap)  # probabilities in [0, 1]
        seg = agglomerate(membrane, overlap, [threshold], fragment_mode="3d")[0]
        for rule in ("membrane", "contact"):
            for size in sizes if rule == "membrane" else sizes[1:]:
                out = dust_merge(seg, membrane, size, rule) if size else seg
                scores = evaluate(truth, out)
                cells[rule, size, q] = _cells(scores)
    for rule, size in dict.fromkeys((r, s) for r, s, _ in cells):
        name = "none" if not size else f"{rule}, under {size} voxels"
        print(f"| {name} | {cells[rule, size, 'd']} | {cells[rule, size, 'c']} |")
    return 0


def seeds_table(run):
    """3-D fragments with the default and h-maxima seeds: their own scores (before any merge)
    and their agglomeration at d's threshold of lowest VOI, on d and c."""
    from neuron3d import agglomerate as A
    from neuron3d.metrics import evaluate

    def case(q, h):
        membrane, overlap, _, truth = _quadrant(run, q)
        membrane, overlap = A.check_inputs(membrane, overlap)
        frags = A.fragments(membrane, mode="3d") if h is None else \
            h_maxima_fragments(membrane, h)
        affs = _fragment_affinities(membrane, overlap, frags)
        return np.ascontiguousarray(affs, dtype=np.float32), frags, truth

    print(f"{run.name}: 3-D fragments (before any merge: VOI split / merge, fragments) and "
          "their agglomeration at d's threshold of lowest VOI\n")
    print("| seeds | d: fragments | d: threshold, agglomerated | c: fragments | c: agglomerated "
          "|\n|---|---|---|---|---|")
    for name, h in (("default (min distance 5)", None), ("h-maxima, h = 1", 1.0),
                    ("h-maxima, h = 0.5", 0.5)):
        (affs, frags, truth), (affs_c, frags_c, truth_c) = case("d", h), case("c", h)
        t, best = _chosen_on_d(affs, frags, truth)
        own = [evaluate(x, f) for x, f in ((truth, frags), (truth_c, frags_c))]
        c = evaluate(truth_c, A._waterz(affs_c, frags_c.copy(), [t], "median")[0])
        cells = [f"{o['voi_split']:.2f} / {o['voi_merge']:.2f}, {int(f.max())}"
                 for o, f in zip(own, (frags, frags_c))]
        print(f"| {name} | {cells[0]} | {t:.2f}: {_cells(best)} | {cells[1]} | {_cells(c)} |",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
