"""experiment_8.sh --chunks runs the agglomeration, its sweep on d and its evaluation blockwise,
with the scores of the in-memory plan.

No network is trained: the networks' outputs (predicted membranes and NN-5's overlap images
of c and d) are written where the plan reads them, and the plan's own commands from there on
(zarr copies, evaluation volumes, sweep, agglomeration, scores) run in this process.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

pytest.importorskip("dask.distributed")
pytest.importorskip("zarr")

from neuron3d import io, labels  # noqa: E402
from neuron3d import plan as P  # noqa: E402
from neuron3d import recipe as R  # noqa: E402
from neuron3d.synthetic import synthetic_labels  # noqa: E402

STAGES = ("zarr_label_", "evaluation_", "zarr_membrane_", "zarr_overlap_nn5_",
          "sweep_agglomerate_", "agglomerate_", "evaluate_agglomerate")


def fake_predictions(layout):
    """Noisy membrane and overlap 'predictions' of c and d, and their label quadrants."""
    for seed, q in enumerate("cd"):
        ids = synthetic_labels((6, 32, 32), seed=seed + 3)
        rng = np.random.default_rng(seed)
        mask = labels.membrane(ids)
        mem = np.clip(mask * 200 + rng.normal(30, 40, ids.shape), 0, 255).astype(np.uint8)
        over = labels.overlap(ids, mask) * 200 + rng.normal(30, 40, (5, 32, 32))
        over = np.clip(over, 0, 255).astype(np.uint8)
        io.write_tif(layout.quadrant_tif("label", q), ids)
        io.write_tif(layout.membrane_predicted(q), mem)
        folder = layout.prediction("nn5", q) / "images"
        folder.mkdir(parents=True)
        for z, image in enumerate(over):
            io.write_image(folder / f"{z:02d}-outputs.png", image)


def run_step(step):
    """One plan step's command, in this process."""
    argv = list(step.argv)
    if argv[0] == "-m":
        module, args = argv[1], argv[2:]
    else:
        module, args = argv[0].removesuffix(".py").replace("/", "."), argv[1:]
    assert importlib.import_module(module).main(args) == 0, step.shell()


def agglomeration_scores(tmp_path, *extra):
    o = R.resolve(R.build_parser().parse_args([
        "--demo", "--shape", "6", "64", "64", "--method", "agglomerate",
        "--datasets", str(tmp_path / "data"), "--results", str(tmp_path / "results"), *extra]))
    layout = R.Layout.of(o)
    fake_predictions(layout)
    steps = [s for s in P.plan(o, layout, o.shape) if s.name.startswith(STAGES)]
    for step in steps:
        run_step(step)
    sweep = json.loads(layout.sweep.read_text())
    sweep.pop("inputs")
    return steps, sweep, json.loads(layout.agglomerated_scores.read_text()), layout


def test_chunks_plan_gives_the_scores_of_the_in_memory_plan(tmp_path):
    plain, sweep, scores, _ = agglomeration_scores(tmp_path / "memory")
    chunked, sweep_b, scores_b, layout = agglomeration_scores(
        tmp_path / "blockwise", "--chunks", "4", "13", "15", "--scheduler", "local:1")
    commands = {s.name: s.shell() for s in chunked}
    for name in ("sweep_agglomerate_d", "agglomerate_c", "evaluate_agglomerate"):
        assert "--scheduler local:1" in commands[name] and ".zarr" in commands[name], name
    assert {s.name for s in chunked} - {s.name for s in plain} == {
        "zarr_label_c", "zarr_label_d", "zarr_membrane_c", "zarr_membrane_d",
        "zarr_overlap_nn5_c", "zarr_overlap_nn5_d"}
    assert layout.agglomerated.suffix == ".zarr" and layout.agglomerated.is_dir()
    assert sweep_b == sweep  # every threshold's scores, bit for bit, and the choice
    assert len(sweep["rows"]) == 19
    drop = ("predicted", "true", "labels")  # the files' names differ (.tif / .zarr)
    assert {k: v for k, v in scores_b.items() if k not in drop} == \
        {k: v for k, v in scores.items() if k not in drop}
