"""neuroglancer3D.py: view EM, ground truth and a reconstruction in Neuroglancer.

    python neuroglancer3D.py --em datasets/em_c.tif --label datasets/label_c.tif \\
        --predicted datasets/experiment_8.tif

Any stack may be a .zarr store (OME-Zarr): the browser reads it as it lies on disk, from the
same address and port, fetching the pyramid level the zoom needs (never the whole volume;
its metadata is served at --voxel_size). Its segments are shown in the cross-sections, and
meshed in the 3D panel only when chosen with --segments (then the store is served from
level 0 through the Python server, and meshing reads the whole volume).

Serves on 127.0.0.1 (to view from another machine, forward the port over SSH, e.g.
``ssh -L 8080:127.0.0.1:8080 host`` with --port 8080), prints the URL and keeps serving
until Ctrl-C.  With --screenshot FILE.png it renders the view in headless Chromium
instead, saves the picture and exits.  Flags are documented with underscores
(--bind_address, --max_segments); the dashed spellings (--bind-address,
--max-segments, ...) work too.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from neuron3d import io, zarrio
from neuron3d.cli import ArgumentParser, run_cli


def build_parser():
    p = ArgumentParser(prog="neuroglancer3D.py", description=__doc__.replace("``", ""),
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       either_spelling=True)
    p.add_argument("-a", "--bind_address", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1; 0.0.0.0 exposes the data "
                        "to the network)")
    p.add_argument("--port", type=int, default=0, help="port 0..65535 (default 0: a free one)")
    p.add_argument("--static_content_url", help="serve the Neuroglancer client from this URL "
                   "instead of the copy bundled with the neuroglancer package")
    p.add_argument("--em", help="EM stack (.tif or folder of slices)")
    p.add_argument("--label", help="ground-truth label stack")
    p.add_argument("--predicted", help="predicted label stack (e.g. reconstruct3D.py output)")
    p.add_argument("--voxel_size", type=float, nargs=3, default=(6.0, 6.0, 30.0),
                   metavar=("X", "Y", "Z"), help="voxel size in nm (default 6 6 30, SNEMI3D)")
    p.add_argument("--segments", type=int, nargs="+", metavar="ID",
                   help="segment IDs to show, each 0..2**64-1 (default: all, or the largest "
                        "--max_segments)")
    p.add_argument("--max_segments", type=int, default=200,
                   help="show at most this many (>= 1) of the largest segments by default (200)")
    p.add_argument("--screenshot", metavar="FILE.png",
                   help="render in headless Chromium, save a PNG and exit")
    p.add_argument("--size", type=int, nargs=2, default=(1200, 800), metavar=("W", "H"),
                   help="screenshot size in pixels, each 1..16384 (default 1200 800)")
    return p


def _open(path, read, flag, **options):
    """A .zarr store opened for reading on demand, any other stack read into memory;
    messages name ``flag``."""
    if path is None:
        return None
    if zarrio.is_zarr(path):
        array = zarrio.open_array(path, flag)
        if array.ndim == 4:
            raise ValueError(f"{path}: expected gray images or labels (z, y, x), got shape "
                             f"{array.shape}")
        if read is io.read_labels and not np.issubdtype(array.dtype, np.unsignedinteger):
            raise ValueError(f"labels {path} must have an unsigned integer dtype, got "
                             f"{array.dtype}")
        return array
    return read(path, what=flag, **options)


def run(args):
    from neuron3d import viewer

    # Every option first (nothing read, nothing served, nothing written on bad input).
    viewer.check_port(args.port, "--port")
    viewer.check_voxel_size(args.voxel_size, "--voxel_size")
    viewer.check_segments(args.segments, "--segments")
    viewer.check_max_segments(args.max_segments, "--max_segments")
    io.check_outputs_apart({"--em": args.em, "--label": args.label,
                            "--predicted": args.predicted}, {"--screenshot": args.screenshot})
    if args.screenshot:
        viewer.check_screenshot(args.screenshot, args.size, "--screenshot", "--size")
        try:
            viewer.find_browser()
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
    sources = {"em": args.em, "label": args.label, "predicted": args.predicted}
    em, label, predicted = (_open(args.em, io.read_stack, "--em", channel=0),
                            _open(args.label, io.read_labels, "--label"),
                            _open(args.predicted, io.read_labels, "--predicted"))
    if args.bind_address in ("0.0.0.0", "::", ""):
        print("neuroglancer3D.py: warning: serving on all interfaces; anyone who can reach "
              "this machine can see the data (prefer SSH port forwarding)", file=sys.stderr)
    viewer.start_server(args.bind_address, args.port, args.static_content_url, "--port")
    view = viewer.build_viewer(em, label, predicted, args.voxel_size, args.segments,
                               args.max_segments, sources)
    if args.screenshot:
        try:
            path = viewer.screenshot(view, args.screenshot, tuple(args.size))
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
        print(f"neuroglancer3D.py: wrote screenshot {path}")
        return 0
    print(view.get_viewer_url(), flush=True)
    print("neuroglancer3D.py: serving; press Ctrl-C to stop", file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("neuroglancer3D.py: stopped", file=sys.stderr)
    return 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    return run_cli("neuroglancer3D.py", lambda: run(args))


if __name__ == "__main__":
    raise SystemExit(main())
