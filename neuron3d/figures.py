"""Figures the project draws from its own data (see documentation/README.md).

    python -m neuron3d.figures synthetic documentation/synthetic_data.png
    python -m neuron3d.figures run results/demo --out documentation/
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import numpy as np

from .cli import ArgumentParser, run_cli
from .labels import membrane


def png_bytes(image):
    """An RGB or gray uint8 image encoded as PNG bytes."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


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


def _pyplot():
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(plt, fig, out, dpi=110):
    """Write a matplotlib figure to the PNG file ``out`` atomically and close it."""
    from .io import write_file

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return write_file(out, buffer.getvalue())


def _axes_image(ax, image, title, cmap="gray"):
    ax.imshow(image, cmap=cmap, vmin=0, vmax=255 if image.ndim == 2 else None,
              interpolation="nearest")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def interleaved_section(cytoplasm, overlap, row, repeat=3):
    """x-z section through the interleaved planes: cytoplasm white, overlap red (RGB)."""
    from .reconstruct import interleave

    planes = interleave(cytoplasm, overlap)[:, row, :]
    rgb = np.zeros(planes.shape + (3,), np.uint8)
    rgb[0::2][planes[0::2]] = (235, 235, 235)
    rgb[1::2][planes[1::2]] = (230, 40, 40)
    return np.repeat(rgb, repeat, axis=0)


def workflow_figure(layout, out, shot=None, z=None):
    """The thesis' workflow figure, drawn from a finished run's own data.

    ``layout`` is the run's :class:`neuron3d.recipe.Layout` (every file name).
    """
    plt = _pyplot()

    from .io import read_binary, read_labels, read_stack
    from .recipe import COMBOS, TEST_QUADRANT

    L, q = layout, TEST_QUADRANT
    cyto, over = COMBOS["thesis"][0]
    em = read_stack(L.quadrant_tif("em", q))
    z = len(em) // 2 if z is None else min(z, len(em) - 2)
    truth = {k: read_binary(L.images(k, q)) for k in ("membrane", "cytoplasm", "overlap")}
    pred = {"membrane": read_binary(L.membrane_predicted(q)),
            "cytoplasm": read_binary(L.cytoplasm_predicted(cyto, q)),
            "overlap": read_binary(L.prediction(over, q) / "images")}
    thin = read_binary(L.overlap_thinned(over, q))
    recon = read_labels(L.reconstruction(cyto, over))
    evaluation = read_labels(L.evaluation(q))
    agglomerated = read_labels(L.agglomerated) if L.agglomerated.exists() else None
    fig = plt.figure(figsize=(19.5, 8.6), layout="constrained")
    grid = fig.add_gridspec(3, 7, height_ratios=[1, 1, 0.55],
                            width_ratios=[1, 1, 1, 1, 1, 1, 2])
    rows = (("ground truth", truth, evaluation, truth["overlap"]),
            ("predicted", pred, recon, thin))
    for i, (name, images, labels, over) in enumerate(rows):
        _axes_image(fig.add_subplot(grid[i, 0]), em[z], f"EM, slice {z}")
        _axes_image(fig.add_subplot(grid[i, 1]), images["membrane"][z] * 255,
                    f"membrane ({name})")
        _axes_image(fig.add_subplot(grid[i, 2]), images["cytoplasm"][z] * 255,
                    f"cytoplasm ({name})")
        title = f"overlap {z}-{z + 1} ({name}{', thinned' if i else ''})"
        overlay = gray_rgb(images["overlap"][z] * 120)
        overlay[over[z]] = (255, 60, 60)
        _axes_image(fig.add_subplot(grid[i, 3]), overlay, title)
        _axes_image(fig.add_subplot(grid[i, 4]), colorize(labels[z]),
                    "evaluation volume" if i == 0 else "reconstruction (thesis)")
    _axes_image(fig.add_subplot(grid[0, 5]), colorize(read_labels(L.quadrant_tif("label", q))[z]),
                "ground-truth labels")
    ax = fig.add_subplot(grid[1, 5])
    if agglomerated is not None:
        _axes_image(ax, colorize(agglomerated[z]), "agglomerated (threshold chosen on d)")
    else:
        ax.text(0.5, 0.5, "no agglomeration\n(--method thesis)", ha="center", va="center")
        ax.set_axis_off()
    ax = fig.add_subplot(grid[0:2, 6])
    if shot is not None and Path(shot).exists():
        from PIL import Image

        ax.imshow(np.asarray(Image.open(shot).convert("RGB")))
        ax.set_title("reconstructed neurons (neuroglancer3D.py --screenshot)", fontsize=9)
    else:
        ax.text(0.5, 0.5, "3D view needs chromium\n(neuroglancer3D.py --screenshot)",
                ha="center", va="center")
    ax.set_axis_off()
    row = em.shape[1] // 2
    section = interleaved_section(pred["cytoplasm"], thin, row)
    recon_section = np.repeat(colorize(recon[:, row, :]), 6, axis=0)
    ax = fig.add_subplot(grid[2, 0:3])
    _axes_image(ax, section, f"interleaved planes C0, O0, C1, ... (x-z section at y = {row}; "
                "cytoplasm white, thinned overlap red)")
    ax.set_aspect("auto")
    ax = fig.add_subplot(grid[2, 3:7])
    _axes_image(ax, recon_section, "3D connected components, cytoplasm planes kept (same section)")
    ax.set_aspect("auto")
    fig.suptitle("neuron3d workflow on the run's own data: EM -> membrane -> cytoplasm / overlap "
                 "-> interleave -> 3D connected components", fontsize=11)
    save_figure(plt, fig, out)


METRICS = (("adapted_rand_error", "adapted Rand error"), ("voi_split", "VOI split (bits)"),
           ("voi_merge", "VOI merge (bits)"), ("adjusted_rand_index", "adjusted Rand index"))


def row_name(row):
    """How a result row is named in tables and charts."""
    if row.get("method") == "agglomerate":
        what = "NN-6 affinities, agglomerated" if row.get("key") == "affinities" else "agglomerate"
        return f"{what}, threshold {row['merge_threshold']:g} (chosen on d)"
    return "thesis: cytoplasm {} / overlap {}".format(
        *(k.upper().replace("NN", "NN-") for k in row["key"].split("_")))


def metrics_table(report):
    """Markdown table of every reconstruction and the baselines, against both references.

    The first block scores against the evaluation volume (the thesis' reference, membranes 0),
    the second against the ground-truth labels (the field's, every voxel counted).
    """
    head = ["reconstruction", "reference", "adapted Rand error", "ARI", "splits", "merges",
            "VOI split", "VOI merge", "objects (true / predicted)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    references = [("evaluation volume", None, "baselines")]
    if all("labels_scores" in r for r in report["results"]) and "baselines_labels" in report:
        references.append(("ground truth", "labels_scores", "baselines_labels"))
    for reference, key, base in references:
        entries = [(row_name(r), r[key] if key else r) for r in report["results"]]
        entries += [(f"baseline: {name.replace('_', ' ')}", s)
                    for name, s in report[base].items()]
        for name, s in entries:
            lines.append(f"| {name} | {reference} | {s['adapted_rand_error']:.4f} | "
                         f"{s['adjusted_rand_index']:.4f} | {s['splits']} | {s['merges']} | "
                         f"{s['voi_split']:.3f} | {s['voi_merge']:.3f} | "
                         f"{s['true_objects']} / {s['predicted_objects']} |")
    return "\n".join(lines) + "\n"


def quality_rows(report):
    """(network title, quadrant, quality dict) of every network's predictions in ``report``;
    a network calibrated on d (:mod:`neuron3d.calibrate`) also as calibrated."""
    rows = []
    for net in report.get("networks", {}).values():
        rows += [(net["title"], q, quality) for q, quality in sorted(net["quality"].items())]
        if net.get("calibration"):
            title = f"{net['title']}, calibrated on d ({net['calibration']['threshold']:.2f})"
            rows += [(title, q, quality)
                     for q, quality in sorted(net.get("quality_calibrated", {}).items())]
    return rows


def quality_table(report):
    """Markdown table of each network's pixel (and membrane boundary) scores per quadrant."""
    head = ["network", "quadrant", "precision", "recall", "F1", "boundary F1 (1 px)",
            "boundary F1 (2 px)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for title, q, s in quality_rows(report):
        bounds = [f"{s[k]['f1']:.3f}" if k in s else "" for k in ("boundary_1px", "boundary_2px")]
        lines.append(f"| {title} | {q} | {s['precision']:.3f} | {s['recall']:.3f} | "
                     f"{s['f1']:.3f} | {' | '.join(bounds)} |")
    return "\n".join(lines) + "\n"


def quality_chart(report, out):
    """Bars of each network's pixel F1 per quadrant, and the membranes' boundary F1."""
    plt = _pyplot()

    rows = quality_rows(report)
    names = [f"{title}, {q}" for title, q, _ in rows]
    fig, ax = plt.subplots(figsize=(9, 1.0 + 0.45 * len(rows)), layout="constrained")
    series = [("pixel F1 at 0.5", "f1", "tab:blue"),
              ("boundary F1, 1 px", "boundary_1px", "tab:green")]
    height = 0.8 / len(series)
    for k, (label, key, color) in enumerate(series):
        values = [(s[key] if key == "f1" else s.get(key, {}).get("f1", np.nan))
                  for _, _, s in rows]
        offsets = [i - 0.4 + height * (k + 0.5) for i in range(len(rows))]
        ax.barh(offsets, values, height=height, color=color, label=label)
        for y, v in zip(offsets, values):
            if np.isfinite(v):
                ax.text(v, y, f" {v:.3f}", va="center", fontsize=7)
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(f"run {report['run']}: each network's predictions vs ground-truth images",
                 fontsize=10)
    save_figure(plt, fig, out)


def metrics_chart_data(report):
    """What :func:`metrics_chart` draws: the bar names (each reconstruction, then each
    baseline) and, per reference, its colour and each metric's values in the order of the names.

    Returns
    -------
    dict
        ``names``: list of str; ``series``: list of (reference, colour, {metric: [values]}),
        the evaluation volume first and the ground-truth labels where every row has them.
    """
    rows, base = report["results"], report["baselines"]
    names = [row_name(r) for r in rows] + [f"baseline: {k.replace('_', ' ')}" for k in base]
    scored = [("evaluation volume", "tab:blue", rows + list(base.values()))]
    if all("labels_scores" in r for r in rows) and "baselines_labels" in report:
        scored.append(("ground truth", "tab:orange", [r["labels_scores"] for r in rows]
                       + list(report["baselines_labels"].values())))
    series = [(reference, color, {key: [s[key] for s in scores] for key, _ in METRICS})
              for reference, color, scores in scored]
    return {"names": names, "series": series}


def metrics_figure(report):
    """The matplotlib figure of :func:`metrics_chart` (one panel per metric of
    :data:`METRICS`), and pyplot; the caller saves or closes it."""
    plt = _pyplot()

    data = metrics_chart_data(report)
    names, series = data["names"], data["series"]
    height = 0.8 / len(series)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.4 * len(METRICS), 1.2 + 0.55 * len(names)),
                             layout="constrained")
    for ax, (key, label) in zip(axes, METRICS):
        for k, (reference, color, values) in enumerate(series):
            offsets = [i - 0.4 + height * (k + 0.5) for i in range(len(names))]
            ax.barh(offsets, values[key], height=height, color=color, label=reference)
            for y, v in zip(offsets, values[key]):
                ax.text(v, y, f" {v:.3f}", va="center", fontsize=7)
        ax.set_yticks(range(len(names)), names if ax is axes[0] else [""] * len(names))
        ax.invert_yaxis()
        ax.set_title(label, fontsize=10)
    axes[-1].legend(fontsize=8, loc="lower right", title="reference", title_fontsize=8)
    fig.suptitle(f"run {report['run']}: every reconstruction of quadrant c, against both "
                 "references", fontsize=11)
    return fig, plt


def metrics_chart(report, out):
    """Bars of each score per reconstruction and baseline: against the evaluation volume
    (dark) and, where the report has them, against the ground-truth labels (light).  Returns
    what it drew (:func:`metrics_chart_data`)."""
    fig, plt = metrics_figure(report)
    save_figure(plt, fig, out)
    return metrics_chart_data(report)


def read_scalars(folder):
    """{tag: (steps, values)} from the TensorBoard event files in ``folder``."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util.tensor_util import make_ndarray

    series = {}
    for path in sorted(Path(folder).glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.HasField("tensor") and not value.tensor.tensor_shape.dim:
                    series.setdefault(value.tag, {})[event.step] = float(make_ndarray(value.tensor))
    return {tag: (sorted(v), [v[k] for k in sorted(v)]) for tag, v in series.items()}


def training_curves(run_dir, out):
    plt = _pyplot()

    nets = sorted(p for p in Path(run_dir).glob("T*_*") if p.is_dir())
    fig, ax = plt.subplots(figsize=(8, 4.2), layout="constrained")
    for net in nets:
        scalars = read_scalars(net)
        if "gen_loss_classic" in scalars:
            steps, values = scalars["gen_loss_classic"]
            line, = ax.plot(steps, values, linewidth=0.6, alpha=0.35)
            smooth, level = [], values[0]
            for value in values:  # exponential moving average, as TensorBoard's smoothing
                level = 0.8 * level + 0.2 * value
                smooth.append(level)
            ax.plot(steps, smooth, color=line.get_color(), linewidth=1.8, label=net.name)
        elif (net / "training.json").is_file():  # NN-6 records its mean loss per 50 steps
            losses = json.loads((net / "training.json").read_text()).get("loss") or []
            if losses:
                ax.plot([r["step"] for r in losses], [r["loss"] for r in losses],
                        linewidth=1.8, label=f"{net.name} (mean per 50 steps)")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (2-D networks: Y_loss; NN-6: weighted BCE)")
    ax.set_title("training curves (TensorBoard logs: faint per batch, bold smoothed; NN-6: "
                 "its training.json)")
    ax.legend(fontsize=8)
    save_figure(plt, fig, out)


def read_report(run_dir):
    """(report dict, Layout) of a finished experiment_8.sh run folder, its layout re-rooted at
    ``run_dir`` (a copied or moved run is read where it is).

    Raises
    ------
    FileNotFoundError, ValueError
        No ``report.json`` in ``run_dir``, or one without a layout (an older run: re-run it).
    """
    from .recipe import Layout

    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"no report.json in {run_dir} (is it a finished "
                                "experiment_8.sh run, results/<run>?)")
    try:
        report = json.loads(path.read_text())
        return report, Layout.from_dict(report["layout"]).rerooted(run_dir)
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not an experiment_8.sh report ({exc}); re-run "
                         "experiment_8.sh to rewrite it") from None


def run_figures(run_dir, out, browser=True):
    """All figures of a finished experiment_8.sh run into ``out``; returns the files written."""
    from .io import read_labels, read_stack, write_file
    from .recipe import COMBOS, TEST_QUADRANT, runs

    report, layout = read_report(run_dir)
    run, out = layout.run, Path(out)
    thesis = runs(report["options"]["method"], "thesis")  # the workflow is the thesis' method
    segmentation = layout.reconstruction(*COMBOS["thesis"][0]) if thesis else layout.agglomerated
    out.mkdir(parents=True, exist_ok=True)
    written = []
    shot = out / f"{run}_reconstruction_3d.png"
    if browser:
        try:
            from .viewer import build_viewer, screenshot, start_server

            start_server()
            viewer = build_viewer(read_stack(layout.quadrant_tif("em", TEST_QUADRANT)), None,
                                  read_labels(segmentation),
                                  max_segments=60)
            written.append(screenshot(viewer, shot, (900, 700)))
        except RuntimeError as exc:
            print(f"figures: no 3D view: {exc}", file=sys.stderr)
    if thesis:
        workflow_figure(layout, out / f"{run}_workflow.png", shot)
        written.append(out / f"{run}_workflow.png")
    write_file(out / f"{run}_metrics.md", metrics_table(report) + "\n" + quality_table(report))
    metrics_chart(report, out / f"{run}_metrics.png")
    quality_chart(report, out / f"{run}_networks.png")
    training_curves(layout.run_dir, out / f"{run}_training.png")
    written += [out / f"{run}_{k}" for k in ("metrics.md", "metrics.png", "networks.png",
                                            "training.png")]
    return written


def build_parser():
    parser = ArgumentParser(prog="python -m neuron3d.figures",
                            description="Draw the project's figures.")
    sub = parser.add_subparsers(dest="figure", required=True)
    syn = sub.add_parser("synthetic", help="EM | membranes | IDs of a synthetic volume")
    syn.add_argument("output", help="PNG file to write")
    syn.add_argument("--shape", type=int, nargs=3, default=(16, 384, 384))
    syn.add_argument("--seed", type=int, default=0)
    run = sub.add_parser("run", help="workflow, metrics and training figures of a finished run")
    run.add_argument("run_dir", help="results/<run> of experiment_8.sh")
    run.add_argument("--datasets", help="ignored: the run's report.json names its files "
                     "(accepted so that older command lines still work)")
    run.add_argument("--out", default="documentation", help="output folder (documentation/)")
    run.add_argument("--no_browser", action="store_true", help="skip the 3D screenshot")
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        if args.figure == "synthetic":
            from .io import write_file
            from .synthetic import synthetic_volume

            em, ids = synthetic_volume(tuple(args.shape), seed=args.seed)
            write_file(args.output, png_bytes(synthetic_figure(em, ids)))
            print(f"wrote {args.output}")
            return
        for path in run_figures(args.run_dir, args.out, browser=not args.no_browser):
            print(f"wrote {path}")

    return run_cli("neuron3d.figures", body)


if __name__ == "__main__":
    raise SystemExit(main())
