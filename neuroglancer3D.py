"""neuroglancer3D.py: view EM, ground truth and a reconstruction in Neuroglancer.

    python neuroglancer3D.py --em datasets/em_c.tif --label datasets/label_c.tif \
        --predicted datasets/experiment_8.tif

Serves on 127.0.0.1 (see README for viewing from another machine over SSH), prints the
URL and keeps serving until Ctrl-C.  With --screenshot FILE.png it renders the view in
headless Chromium instead, saves the picture and exits.
"""

from __future__ import annotations

import sys
import time

from neuron3d import io
from neuron3d.cli import ArgumentParser, run_cli


def build_parser():
    p = ArgumentParser(prog="neuroglancer3D.py", description=__doc__.splitlines()[0])
    p.add_argument("-a", "--bind-address", default="127.0.0.1",
                   help="address to serve on (default 127.0.0.1; 0.0.0.0 exposes the data "
                        "to the network)")
    p.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    p.add_argument("--static-content-url", help="serve the Neuroglancer client from this URL "
                   "instead of the copy bundled with the neuroglancer package")
    p.add_argument("--em", help="EM stack (.tif or folder of slices)")
    p.add_argument("--label", help="ground-truth label stack")
    p.add_argument("--predicted", help="predicted label stack (e.g. reconstruct3D.py output)")
    p.add_argument("--voxel-size", type=float, nargs=3, default=(6.0, 6.0, 30.0),
                   metavar=("X", "Y", "Z"), help="voxel size in nm (default 6 6 30, SNEMI3D)")
    p.add_argument("--segments", type=int, nargs="+", metavar="ID",
                   help="segment IDs to show (default: all, or the largest --max_segments)")
    p.add_argument("--max_segments", type=int, default=200,
                   help="show at most this many of the largest segments by default (200)")
    p.add_argument("--screenshot", metavar="FILE.png",
                   help="render in headless Chromium, save a PNG and exit")
    p.add_argument("--size", type=int, nargs=2, default=(1200, 800), metavar=("W", "H"),
                   help="screenshot size in pixels (default 1200 800)")
    return p


def run(args):
    from neuron3d.viewer import build_viewer, find_browser, screenshot, start_server

    if not (args.em or args.label or args.predicted):
        raise ValueError("no layer given: pass at least one of --em, --label, --predicted")
    if args.screenshot:
        if not args.screenshot.lower().endswith(".png"):
            raise ValueError(f"--screenshot must name a .png file, got {args.screenshot}")
        try:
            find_browser()
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
    if not 0 <= args.port < 65536:
        raise ValueError(f"--port must be 0..65535, got {args.port}")
    em = io.read_stack(args.em, channel=0) if args.em else None
    label = io.read_labels(args.label) if args.label else None
    predicted = io.read_labels(args.predicted) if args.predicted else None
    if args.bind_address in ("0.0.0.0", "::", ""):
        print("neuroglancer3D.py: warning: serving on all interfaces; anyone who can reach "
              "this machine can see the data (prefer SSH port forwarding)", file=sys.stderr)
    start_server(args.bind_address, args.port, args.static_content_url)
    viewer = build_viewer(em, label, predicted, args.voxel_size, args.segments,
                          args.max_segments)
    if args.screenshot:
        try:
            path = screenshot(viewer, args.screenshot, tuple(args.size))
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
        print(f"neuroglancer3D.py: wrote screenshot {path}")
        return 0
    print(viewer.get_viewer_url(), flush=True)
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
