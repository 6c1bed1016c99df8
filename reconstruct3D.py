"""reconstruct3D.py: label neurons from predicted images, by the thesis' method or by agglomeration.

--method thesis (default): binarizes the images (foreground: first channel >= --threshold),
interleaves the N cytoplasm planes with the N-1 overlap planes (C0, O0, C1, ..., C(N-1)), labels
the foreground's 3D connected components (6-connected, i.e. face neighbours, by
default) and keeps the cytoplasm planes: ``<output_dir>/<name>.tif`` holds IDs
1..K, background 0, in the smallest unsigned dtype (at least 16 bits) that holds K.

--method agglomerate: reads the predicted membrane probabilities (N slices) and the predicted
overlap probabilities before thinning (N-1), cuts each slice into fragments (a watershed of the
membrane), builds the affinity graph (in-plane 1 - max(membrane[p], membrane[q]), between
slices the overlap at the same (y, x)) and merges fragments with waterz while the median
boundary score is below --merge_threshold (or the threshold a sweep file chose,
--merge_threshold_from SWEEP.json). Every voxel gets a label. One output per threshold:
<name>.tif for one, <name>_<threshold>.tif for several.

--method agglomerate --input_affinities A.tif: the same from predicted z, y, x affinities (a
(z, y, x, 3) stack, python -m imagetranslation.affinity --mode test) instead of membranes and
overlaps: fragments from a watershed of the 3-D boundary map (--fragments), merged while the
median of 1 - affinity on their boundary is below the threshold.

Large volumes: inputs ending in .zarr are read as OME-Zarr stores, and --name N.zarr writes
<output_dir>/N.zarr instead of a .tif.  With --scheduler (local:N or tcp://HOST:PORT) the thesis
method runs blockwise on dask, .zarr to .zarr, 6-connected: connected components per block, the
labels touching across block faces merged, objects numbered 1..K in the order of their first
voxel (z, then y, then x) -- exactly the in-memory result.  --method agglomerate runs blockwise
with --scheduler, or serially when the inputs and outputs are .zarr stores (every --scoring):
fragments and the region graph per block of --chunks Z whole slices, merged on
this machine exactly as waterz merges them -- the in-memory result, bit for bit (with
--fragments 3d, one 3-D watershed per block: fragments do not cross block faces, so that
result equals the in-memory agglomeration of those fragments, and the in-memory --fragments 3d
when one block holds every slice); several --merge_threshold values give
<name>_<threshold>.zarr each.  The membrane and overlap stores
must have the same y-x size and chunks.

Nothing is written (no folder created) when the input is invalid, nor when an output is, contains
or lies inside an input (--output_dir <the cytoplasm folder> --name 00 is refused).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from neuron3d import blockwise, io, zarrio
from neuron3d.affinity import FRAGMENTS
from neuron3d.agglomerate import DEFAULT_THRESHOLD, SCORINGS, check_thresholds
from neuron3d.cli import ArgumentParser, check_name, check_output_dir, run_cli
from neuron3d.labels import FOREGROUND
from neuron3d.reconstruct import (
    CONNECTIVITIES,
    THRESHOLDS,
    check_connectivity,
    check_planes,
    check_threshold,
    reconstruct,
)


def build_parser():
    parser = ArgumentParser(prog="reconstruct3D.py", description=__doc__.replace("``", ""),
                            either_spelling=True,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", choices=["thesis", "agglomerate"], default="thesis",
                        help="thesis: connected components of interleaved cytoplasm and "
                             "(thinned) overlap planes (default); agglomerate: watershed "
                             "fragments of the membrane merged by boundary affinity (waterz)")
    parser.add_argument("--input_dir_cytoplasm",
                        help="thesis: cytoplasm images, folder of slice files or .tif stack "
                             "(N slices)")
    parser.add_argument("--input_dir_overlap",
                        help="overlap images: folder or .tif (N-1 slices; an N-th is ignored "
                             "with a warning; an empty folder for N = 1); thesis: thinned "
                             "(eroskele), agglomerate: the network's probabilities, not thinned")
    parser.add_argument("--input_dir_membrane",
                        help="agglomerate: membrane probabilities (N slices, 0..255), folder of "
                             "slice files or .tif stack")
    parser.add_argument("--input_affinities", metavar="STACK",
                        help="agglomerate: predicted affinities instead of membranes and "
                             "overlaps, a (z, y, x, 3) stack of z, y, x affinities 0..255 "
                             "(python -m imagetranslation.affinity --mode test)")
    parser.add_argument("--fragments", choices=FRAGMENTS,
                        help="agglomerate: how fragments are cut. Of membranes: 2d (a "
                             "watershed per slice, the default) or 3d (one watershed of the "
                             "volume, for isotropic data such as FIB-SEM; blockwise one per "
                             "block of --chunks Z slices); not given with "
                             "--merge_threshold_from, those its sweep chose on. Of "
                             "--input_affinities: 3d (a watershed of the 3-D boundary map, "
                             "default), zwatershed (waterz's watershed of the affinity graph, "
                             "exact on perfect affinities) or 2d (per slice)")
    parser.add_argument("--merge_threshold", type=float, nargs="+",
                        help="agglomerate: merge while the boundary score (membrane-like, "
                             "0..1) is below this; several values give one output each "
                             f"(default {DEFAULT_THRESHOLD}, chosen on held-out data: "
                             "see documentation/agglomeration.md)")
    parser.add_argument("--merge_threshold_from", metavar="SWEEP.json",
                        help="agglomerate: take the one threshold from the 'chosen' entry of a "
                             "sweep file (python -m neuron3d.sweep --output); instead of "
                             "--merge_threshold")
    parser.add_argument("--scoring", choices=sorted(SCORINGS), default="median",
                        help="agglomerate: boundary statistic (default median)")
    parser.add_argument("--output_dir", required=True,
                        help="folder for <name>.tif (created when the result is written)")
    parser.add_argument("--name", required=True,
                        help="output file name without folder or .tif, e.g. experiment_8 "
                             "(N.zarr: an OME-Zarr store)")
    parser.add_argument("--connectivity", type=int, default=6, choices=CONNECTIVITIES,
                        help="3D neighbourhood (default 6, face neighbours, as in the thesis)")
    parser.add_argument("--threshold", type=int, default=FOREGROUND,
                        help="foreground is first-channel value >= THRESHOLD, a whole number "
                             f"in {THRESHOLDS[0]}..{THRESHOLDS[1]} (8-bit images; default "
                             f"{FOREGROUND}, the thesis')")
    blockwise.add_arguments(parser)
    return parser


def output_path(folder, name):
    """``<folder>/<name>.tif``, or ``<folder>/<name>`` for a name ending in .zarr."""
    return folder / name if zarrio.is_zarr(name) else folder / f"{name}.tif"


def write_labels(path, labels, chunks=None):
    """Write ``labels`` to ``path`` (.tif, or an OME-Zarr store for .zarr)."""
    return io.write_stack(path, labels, chunks=chunks)


def check_chunks_output(chunks, targets):
    """Refuse ``--chunks`` when no output is a .zarr store (it would be ignored)."""
    if chunks is not None and not any(zarrio.is_zarr(t) for t in targets):
        raise ValueError("--chunks applies to .zarr outputs (--name N.zarr) and --scheduler "
                         f"blocks; this run writes {', '.join(map(str, targets))}")


def _is_empty_folder(path):
    path = Path(path)
    return path.is_dir() and not any(io.SLICE_PATTERN.match(p.name) for p in path.iterdir())


def output_names(name, thresholds):
    """``<name>`` for one threshold, ``<name>_<threshold>`` (``%g``) for each of several
    (``<stem>_<threshold>.zarr`` for a name ending in .zarr)."""
    if len(thresholds) == 1:
        return [name]
    if zarrio.is_zarr(name):
        stem = name.rstrip("/")[: -len(zarrio.SUFFIX)]
        return [f"{stem}_{t:g}{zarrio.SUFFIX}" for t in thresholds]
    return [f"{name}_{t:g}" for t in thresholds]


def given_thresholds(args):
    """The thresholds of --merge_threshold (default :data:`DEFAULT_THRESHOLD`), checked, or
    ``None`` for --merge_threshold_from (the two are exclusive)."""
    if args.merge_threshold_from is not None:
        if args.merge_threshold is not None:
            raise ValueError("--merge_threshold and --merge_threshold_from are exclusive: give "
                             "the threshold or the sweep file that chose it")
        return None
    thresholds = check_thresholds(args.merge_threshold or [DEFAULT_THRESHOLD],
                                  "--merge_threshold")
    if len(set(thresholds)) != len(thresholds):
        raise ValueError(f"--merge_threshold repeats a value: {' '.join(map(str, thresholds))}")
    return thresholds


def _blockwise(args, sources, targets):
    """Whether the agglomeration runs blockwise: with --scheduler, or on .zarr inputs and
    outputs (the serial executor)."""
    if args.scheduler is not None:
        return True
    return all(zarrio.is_zarr(p) for p in list(sources) + list(targets))


def run_agglomerate(args):
    from neuron3d.agglomerate import agglomerate, check_inputs
    from neuron3d.sweep import agglomeration_fragments, fragments_option

    if args.input_affinities is not None:
        args.fragments = fragments_option(args.fragments, affinities=True)
        return run_agglomerate_affinities(args)
    if args.input_dir_overlap is None:
        raise ValueError("--method agglomerate needs --input_dir_overlap (overlap "
                         "probabilities) or --input_affinities")
    if args.input_dir_membrane is None:
        raise ValueError("--method agglomerate needs --input_dir_membrane (membrane "
                         "probabilities)")
    if args.input_dir_cytoplasm is not None:
        raise ValueError("--input_dir_cytoplasm is for --method thesis; agglomerate reads "
                         "--input_dir_membrane and --input_dir_overlap")
    name = check_name(args.name, "--name")
    folder = check_output_dir(args.output_dir, "--output_dir")
    sources = (args.input_dir_membrane, args.input_dir_overlap)
    inputs = {"--input_dir_membrane": sources[0], "--input_dir_overlap": sources[1],
              "--merge_threshold_from": args.merge_threshold_from}
    thresholds = given_thresholds(args)  # None: the one the sweep file chose, read below
    names = [name] if thresholds is None else output_names(name, thresholds)
    targets = [output_path(folder, n) for n in names]
    in_blocks = _blockwise(args, sources, targets)
    mode = agglomeration_fragments(args.fragments, args.merge_threshold_from)
    blockwise.check_arguments(args, {"--input_dir_membrane": sources[0],
                                     "--input_dir_overlap": sources[1]},
                              {"--name": targets[0]})
    if args.scheduler is None:
        check_chunks_output(args.chunks, targets)
    io.check_outputs_apart(inputs, [("--output_dir/--name", targets[0])] if len(targets) == 1
                           else [(f"--output_dir/--name (threshold {t:g})", p)
                                 for t, p in zip(thresholds, targets)])
    thresholds, origin = _thresholds_and_origin(args)
    if in_blocks:
        return run_agglomerate_blockwise(args, sources, targets, thresholds, origin, mode)
    membrane, overlap = check_inputs(
        io.read_stack(sources[0], channel=0, what="--input_dir_membrane"),
        io.read_stack(sources[1], channel=0, what="--input_dir_overlap"), sources)
    print(f"reconstruct3D.py: agglomerating {membrane.shape} membrane and {overlap.shape} "
          f"overlap probabilities ({mode} fragments, {args.scoring} boundary score, thresholds "
          f"{' '.join(f'{t:g}' for t in thresholds)}{origin})", file=sys.stderr)
    start = time.perf_counter()
    volumes = agglomerate(membrane, overlap, thresholds, scoring=args.scoring, sources=sources,
                          fragment_mode=mode)
    for out_name, threshold, labels in zip(output_names(name, thresholds), thresholds, volumes):
        out = write_labels(output_path(folder, out_name), labels, args.chunks)
        print(f"reconstruct3D.py: threshold {threshold:g}{origin}: {int(labels.max())} objects; "
              f"wrote {labels.shape} {labels.dtype} to {out}")
    print(f"reconstruct3D.py: agglomerated in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)


def _thresholds_and_origin(args):
    """The merge thresholds (from --merge_threshold or the sweep file) and how they were got."""
    thresholds = given_thresholds(args)
    if thresholds is not None:
        return thresholds, ""
    from neuron3d.sweep import chosen_threshold

    return (check_thresholds([chosen_threshold(args.merge_threshold_from)],
                             "--merge_threshold_from"),
            f" (chosen in {args.merge_threshold_from})")


def run_agglomerate_affinities(args):
    """--method agglomerate --input_affinities: :func:`neuron3d.affinity.agglomerate_affinities`."""
    from neuron3d.affinity import agglomerate_affinities, read_affinities

    for flag in ("input_dir_membrane", "input_dir_overlap", "input_dir_cytoplasm"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag} and --input_affinities are exclusive: the affinities "
                             "replace membranes and overlaps")
    if args.scheduler is not None or args.chunks is not None:
        raise ValueError("--input_affinities runs in memory (no --scheduler / --chunks yet)")
    name = check_name(args.name, "--name")
    folder = check_output_dir(args.output_dir, "--output_dir")
    source = args.input_affinities
    given = given_thresholds(args)
    names = [name] if given is None else output_names(name, given)
    targets = [output_path(folder, n) for n in names]
    io.check_outputs_apart({"--input_affinities": source,
                            "--merge_threshold_from": args.merge_threshold_from},
                           [(f"--output_dir/--name ({n})", p) for n, p in zip(names, targets)])
    thresholds, origin = _thresholds_and_origin(args)
    affs = read_affinities(source, "--input_affinities")
    print(f"reconstruct3D.py: agglomerating {affs.shape[1:]} affinities ({args.fragments} "
          f"fragments, {args.scoring} boundary score, thresholds "
          f"{' '.join(f'{t:g}' for t in thresholds)}{origin})", file=sys.stderr)
    start = time.perf_counter()
    volumes = agglomerate_affinities(affs, thresholds, args.scoring, args.fragments,
                                     source=source)
    for out, threshold, labels in zip(targets, thresholds, volumes):
        out = write_labels(out, labels)
        print(f"reconstruct3D.py: threshold {threshold:g}{origin}: {int(labels.max())} objects; "
              f"wrote {labels.shape} {labels.dtype} to {out}")
    print(f"reconstruct3D.py: agglomerated in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)


def run_agglomerate_blockwise(args, sources, targets, thresholds, origin, mode):
    """The agglomeration blockwise (:func:`neuron3d.blockwise.agglomerate_stores`)."""
    shape = blockwise.check_agglomerate_inputs(*sources)
    start = time.perf_counter()
    with blockwise.engine(args.scheduler, args.memory_limit) as client:
        result = blockwise.agglomerate_stores(client, sources[0], sources[1], targets,
                                              thresholds, args.chunks, scoring=args.scoring,
                                              fragments=mode)
    for threshold, count, out in zip(thresholds, result["counts"], targets):
        print(f"reconstruct3D.py: threshold {threshold:g}{origin}: {count} objects; wrote {out}")
    print(f"reconstruct3D.py: agglomerated {shape} blockwise ({mode} fragments"
          f"{' per block' if mode == '3d' else ''}, {args.scoring} boundary score): "
          f"{result['fragments']} fragments, {result['edges']} edges (region graph "
          f"{result['graph_bytes'] / 2**20:.1f} MiB), in {time.perf_counter() - start:.1f} s",
          file=sys.stderr)


def run(args):
    if args.method == "agglomerate":
        return run_agglomerate(args)
    for flag in ("input_dir_membrane", "input_affinities", "merge_threshold",
                 "merge_threshold_from", "fragments"):
        if getattr(args, flag) is not None:
            raise ValueError(f"--{flag} is for --method agglomerate")
    if args.input_dir_cytoplasm is None:
        raise ValueError("--method thesis needs --input_dir_cytoplasm")
    if args.input_dir_overlap is None:
        raise ValueError("--method thesis needs --input_dir_overlap")
    cyto_path, over_path = args.input_dir_cytoplasm, args.input_dir_overlap
    name = check_name(args.name, "--name")
    threshold = check_threshold(args.threshold, "--threshold")
    connectivity = check_connectivity(args.connectivity, "--connectivity")
    out = output_path(check_output_dir(args.output_dir, "--output_dir"), name)
    inputs = {"--input_dir_cytoplasm": cyto_path, "--input_dir_overlap": over_path}
    blockwise.check_arguments(args, inputs, {"--name": name})
    check_chunks_output(args.chunks if args.scheduler is None else None, [out])
    io.check_outputs_apart(inputs, {"--output_dir/--name": out})
    if args.scheduler is not None:
        if connectivity != 6:
            raise ValueError("--scheduler labels 6-connected components (--connectivity 6); "
                             f"got --connectivity {connectivity}")
        blockwise.check_reconstruct_inputs(cyto_path, over_path)
        start = time.perf_counter()
        with blockwise.engine(args.scheduler, args.memory_limit) as client:
            count = blockwise.reconstruct(client, cyto_path, over_path, out, args.chunks,
                                          threshold)
        print(f"reconstruct3D.py: {count} objects in {time.perf_counter() - start:.1f} s "
              f"(blockwise); wrote {out}")
        return
    cyto = io.read_binary(cyto_path, threshold, "--input_dir_cytoplasm")
    if len(cyto) == 1 and _is_empty_folder(over_path):  # one slice has no overlap images
        over = np.zeros((0,) + cyto.shape[1:], dtype=bool)
    else:
        over = io.read_binary(over_path, threshold, "--input_dir_overlap")
    if len(over) == len(cyto) and len(cyto) > 0:
        print(f"reconstruct3D.py: {len(over)} overlap slices for {len(cyto)} cytoplasm slices; "
              "ignoring the last overlap slice", file=sys.stderr)
        over = over[:-1]
    cyto, over = check_planes(cyto, over, cyto_path, over_path)
    print(f"reconstruct3D.py: labelling {2 * len(cyto) - 1} interleaved planes of "
          f"{cyto.shape[1]} x {cyto.shape[2]} ({connectivity}-connected)", file=sys.stderr)
    start = time.perf_counter()
    labels = reconstruct(cyto, over, connectivity, cyto_path, over_path)
    write_labels(out, labels, args.chunks)
    print(f"reconstruct3D.py: {int(labels.max())} objects in {time.perf_counter() - start:.1f} s; "
          f"wrote {labels.shape} {labels.dtype} to {out}")


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("reconstruct3D.py", lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
