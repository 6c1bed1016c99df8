"""Figures the project draws from its own data (see documentation/README.md)."""

from __future__ import annotations

import argparse

import numpy as np

from .labels import membrane


def colorize(labels, seed=0):
    """Random but stable RGB colours per label; 0 is black.  (…, ) -> (…, 3) uint8."""
    labels = np.asarray(labels)
    import fastremap

    compact, _ = fastremap.renumber(np.ascontiguousarray(labels), preserve_zero=True)
    rng = np.random.default_rng(seed)
    lut = rng.integers(60, 256, size=(int(compact.max()) + 1, 3), dtype=np.uint8)
    lut[0] = 0
    return lut[compact]


def gray_rgb(image):
    """(y, x) uint8 -> (y, x, 3) uint8."""
    return np.repeat(np.asarray(image, dtype=np.uint8)[..., None], 3, axis=2)


def panel_row(panels, gap=8):
    """Concatenate equally tall RGB panels left to right with white gaps."""
    height = panels[0].shape[0]
    spacer = np.full((height, gap, 3), 255, np.uint8)
    parts = []
    for panel in panels:
        parts += [panel, spacer]
    return np.concatenate(parts[:-1], axis=1)


def synthetic_figure(em, labels, z=None):
    """EM slice | EM with membranes in red | neuron IDs, as one RGB image."""
    z = len(em) // 2 if z is None else z
    overlay = gray_rgb(em[z]).copy()
    overlay[membrane(labels[z : z + 1])[0]] = (230, 40, 40)
    return panel_row([gray_rgb(em[z]), overlay, colorize(labels[z])])


def main(argv=None):
    from PIL import Image

    from .synthetic import synthetic_volume

    parser = argparse.ArgumentParser(description="Draw the synthetic-data figure.")
    parser.add_argument("output", help="PNG file to write")
    parser.add_argument("--shape", type=int, nargs=3, default=(16, 384, 384))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    em, ids = synthetic_volume(tuple(args.shape), seed=args.seed)
    Image.fromarray(synthetic_figure(em, ids)).save(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
