"""The steps of ``experiment_8.sh``, top to bottom as the thesis runs them: pure data.

:func:`plan` lists every step of a run as a :class:`Step`: its command (the thesis' own command
lines), the files it reads and the files it writes.  The plan is static: it depends on the
options, the layout and the volume's shape only, never on what an earlier step wrote, so it is
computed once before anything runs (the agglomeration reads the threshold chosen on d from
the sweep's file, ``reconstruct3D.py --merge_threshold_from``, instead of having it written
into its command).

Each file of a step is named once, in its command: :func:`In` and :func:`Out` mark the
command's arguments that are files read and written, and the step's inputs and outputs are
derived from them (``writes`` adds the files a command names only through their folder, such
as ``split``'s quadrants).  Nothing here runs a process; :mod:`neuron3d.experiment` does.

The steps, for quadrants a, b, c, d of the volume (a = bottom right, b = top right, c = top
left, d = bottom left; see ``process3D.py --operation split``):

1. split EM and labels into quadrants; ground-truth membrane, cytoplasm and overlap images;
2. NN-3 (EM -> membrane) trained on a, membranes predicted on b and c (and d);
3. NN-4 (membrane -> cytoplasm) and NN-5 (two consecutive membranes -> overlap) trained on b's
   *predicted* membranes, cytoplasm and overlap predicted on c;
4. predicted overlaps thinned (``eroskele``), c reconstructed (``reconstruct3D.py``); the
   agglomeration's threshold swept on d and applied to c;
5. scored against c's evaluation volume and ground truth (``evaluate3D.py``).

``--paths all`` also trains NN-1 (EM -> cytoplasm) and NN-2 (two EM slices -> overlap) on a and
scores all four cytoplasm x overlap combinations.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from .recipe import (
    CALIBRATED_RECIPES,
    CHOICE_QUADRANT,
    COMBOS,
    NETWORKS,
    TEST_QUADRANT,
    VALIDATED_NETWORKS,
    VALIDATED_RECIPES,
    affinity_args,
    runs,
    training_args,
)


def volume_shape(options, layout):
    """(z, y, x) of the input volume: --shape for --demo, else read from the TIFF header."""
    if options.demo:
        return tuple(options.shape)
    for path in (layout.em_volume, layout.label_volume):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found. Download SNEMI3D's train-input.tif and train-labels.tif "
                f"(http://brainiac2.mit.edu/SNEMI3D/) into {layout.data}/, or run the "
                "synthetic demo: bash experiment_8.sh --demo")
    import tifffile

    try:
        with tifffile.TiffFile(layout.em_volume) as tif:
            shape = tuple(tif.series[0].shape)
    except (OSError, ValueError, IndexError) as exc:
        raise ValueError(f"cannot read {layout.em_volume}: {exc}") from None
    if len(shape) != 3 or min(shape[1:]) < 8:
        raise ValueError(f"{layout.em_volume} must be a (z, y, x) stack of at least 8 x 8 "
                         f"slices, got shape {shape}")
    return shape


@dataclass(frozen=True)
class Step:
    """One command of the recipe.

    ``argv`` is the command after the Python interpreter (a script of this repository and its
    arguments); ``resume`` is the command that continues it after an interruption, when it can
    (training resumes from its last checkpoint).
    """

    name: str
    argv: tuple[str, ...]
    inputs: tuple[Path, ...]
    outputs: tuple[Path, ...]
    resume: tuple[str, ...] | None = None

    def shell(self):
        return shlex.join(["python", *self.argv])


@dataclass(frozen=True)
class FileArg:
    """A file on a command line: the ``path`` a step reads or writes (what the runner hashes)
    and the ``text`` the command spells it with (a slice folder ``P/images/`` of the trainer's
    output folder ``P``, a ``--name`` without its folder and suffix)."""

    path: Path
    text: str
    written: bool


def In(path, text=None):
    """A file or folder the step reads, spelled ``text`` (default: the path) in its command."""
    return FileArg(Path(path), str(path) if text is None else str(text), False)


def Out(path, text=None):
    """A file or folder the step writes, spelled ``text`` (default: the path) in its command."""
    return FileArg(Path(path), str(path) if text is None else str(text), True)


def images_of(prediction):
    """The trainer's slice images inside its test output folder, read as that folder."""
    return In(prediction, f"{prediction}/images/")


def into(out, name=None):
    """``--output_dir FOLDER/ --name NAME``: a command writing ``out`` by folder and name
    (``NAME`` is its stem, or ``name``)."""
    out = Path(out)
    return ("--output_dir", f"{out.parent}/", "--name", Out(out, out.stem if name is None
                                                           else name))


def make_step(name, argv, writes=(), resume=()):
    """A :class:`Step` from a command whose file arguments are :func:`In` / :func:`Out`.

    Parameters
    ----------
    name : str
    argv : sequence
        The command after the interpreter; numbers and paths are turned into text.
    writes : sequence of path
        Outputs the command names only through their folder (appended to the outputs).
    resume : sequence
        Arguments appended to ``argv`` to continue an interrupted run (none: not resumable).
    """
    text = tuple(a.text if isinstance(a, FileArg) else str(a) for a in argv)
    inputs = tuple(a.path for a in argv if isinstance(a, FileArg) and not a.written)
    outputs = tuple(a.path for a in argv if isinstance(a, FileArg) and a.written)
    return Step(name, text, inputs, outputs + tuple(map(Path, writes)),
                text + tuple(map(str, resume)) if resume else None)


def p3d(*args):
    return ("process3D.py", *args)


def plan(options, layout, shape):
    """The recipe: every step of the run, in the order the thesis runs them.

    Parameters
    ----------
    options : neuron3d.recipe.Options
    layout : neuron3d.recipe.Layout
    shape : tuple of int
        (z, y, x) of the whole volume (sizes the quick recipe's crops).

    Returns
    -------
    list of Step
    """
    L, steps = layout, []
    agglomerate = runs(options.method, "agglomerate")
    thesis = runs(options.method, "thesis")  # the thesis' reconstruction needs NN-4
    # --chunks: the blockwise stages run on dask, .zarr to .zarr
    engine = () if options.chunks is None else (
        "--chunks", *options.chunks, "--scheduler", options.scheduler,
        *(("--memory_limit", options.memory_limit) if options.memory_limit else ()))

    def step(name, *argv, writes=(), resume=()):
        steps.append(make_step(name, argv, writes, resume))

    def to_zarr(name, source, store=None):
        """--chunks: a step converting ``source`` (.tif or slices) to zarr; returns the store."""
        store = store or L.zarr_of(source)
        step(name, *p3d("--operation", "tif_to_zarr", "--input_dir", In(source), "--output_dir",
                        Out(store), "--chunks", *options.chunks))
        return store

    def combine(name, a, b, out):
        step(name, "imagetranslation/tools/process.py", "--operation", "combine",
             "--input_dir", In(a), "--b_dir", In(b), "--output_dir", Out(out))

    def validated(key):
        """Whether network ``key`` validates on d's pairs and keeps its best weights."""
        return (options.recipe in VALIDATED_RECIPES and agglomerate
                and key in VALIDATED_NETWORKS)

    def train(key):
        net, out = NETWORKS[key], L.network(key)
        validation = ()
        if validated(key):
            # early stopping by checkpoint choice on d, the quadrant choices are made on
            validation = ("--validation_dir", In(L.combined(net.pairs, CHOICE_QUADRANT)))
        step(f"train_{key}", "imagetranslation/translate.py", "--mode", "train",
             "--input_dir", In(L.combined(net.pairs, net.quadrant)), "--output_dir", Out(out),
             *training_args(options, shape, key), *validation, resume=("--checkpoint", out))

    def predict(key, q):
        step(f"predict_{key}_{q}", "imagetranslation/translate.py", "--mode", "test",
             "--checkpoint", In(L.network(key)), "--input_dir",
             In(L.combined(NETWORKS[key].pairs, q)), "--output_dir", Out(L.prediction(key, q)),
             "--model", "pix2pix",
             # prediction too: its threads and kernels round the outputs NN-4/NN-5 train on
             *(("--deterministic",) if options.deterministic else ()),
             *(("--tta",) if options.tta and q != "b" else ()),
             # every quadrant's membranes alike: b's are NN-4's and NN-5's training inputs
             *(("--views",) if options.views and key == "nn3" else ()))

    def cytoplasm_network(key):
        q = TEST_QUADRANT
        train(key)
        predict(key, q)
        step(f"cytoplasm_predicted_{key}_{q}", *p3d(
            "--operation", "png_to_tif", "--input_dir", images_of(L.prediction(key, q)),
            *into(L.cytoplasm_predicted(key, q))))

    def overlap_network(key):
        q = TEST_QUADRANT
        train(key)
        predict(key, q)
        if not thesis:  # the agglomeration reads NN-5's overlaps un-thinned
            return
        source = images_of(L.prediction(key, q))
        if options.chunks is not None:
            source = In(to_zarr(f"zarr_overlap_{key}_{q}", L.prediction(key, q) / "images",
                                L.work / f"overlap_predicted_{key}_{q}.zarr"))
        step(f"eroskele_{key}_{q}", *p3d(
            "--operation", "eroskele", "--input_dir", source, "--output_dir",
            Out(L.overlap_thinned(key, q)), "--erosions", options.erosions, *engine))

    # ---- data -----------------------------------------------------------------------------
    if options.demo:
        step("synthetic", *p3d("--operation", "synthetic", "--output_dir", L.data,
                               "--shape", *options.shape, "--seed", options.seed),
             writes=[L.em_volume, L.label_volume])
    quadrants = "abcd"
    for kind, volume in (("em", L.em_volume), ("label", L.label_volume)):
        step(f"split_{kind}", *p3d("--operation", "split", "--input_dir", In(volume),
                                   "--output_dir", f"{L.work}/", "--split", kind),
             writes=[L.quadrant_tif(kind, q) for q in quadrants])
    if options.method == "affinities":
        affinity_steps(step, options, L, shape)
        return steps
    for q in "abcd" if agglomerate else "abc":
        step(f"em_{q}", *p3d("--operation", "tif_to_png", "--input_dir",
                             In(L.quadrant_tif("em", q)), "--output_dir", Out(L.images("em", q))))
        for op in ("membrane", "cytoplasm", "overlap"):
            step(f"{op}_{q}", *p3d("--operation", op, "--input_dir",
                                   In(L.quadrant_tif("label", q)),
                                   "--output_dir", Out(L.images(op, q))))
        combine(f"combine_em_membrane_{q}", L.images("em", q), L.images("membrane", q),
                L.combined("em_membrane", q))
    for q in TEST_QUADRANT + (CHOICE_QUADRANT if agglomerate else ""):
        if options.chunks is None:
            step(f"evaluation_{q}", *p3d("--operation", "evaluation", "--input_dir",
                                         In(L.quadrant_tif("label", q)), *into(L.evaluation(q))))
        else:
            labels = to_zarr(f"zarr_label_{q}", L.quadrant_tif("label", q))
            step(f"evaluation_{q}", *p3d("--operation", "evaluation", "--input_dir", In(labels),
                                         "--output_dir", Out(L.evaluation(q)), *engine))

    # ---- NN-3: EM -> membrane, trained on a, predicted on b and c (and d) -------------------
    train("nn3")
    membrane_quadrants = "bcd" if agglomerate else "bc"
    calibrated = options.recipe in CALIBRATED_RECIPES and agglomerate
    if calibrated:  # d first: its best threshold becomes 0.5 of every quadrant's membranes
        membrane_quadrants = CHOICE_QUADRANT + membrane_quadrants.replace(CHOICE_QUADRANT, "")
    for q in membrane_quadrants:
        predict("nn3", q)
        if calibrated and q == CHOICE_QUADRANT:
            step("calibrate_nn3", "-m", "neuron3d.calibrate", "--choose", "--input_dir",
                 images_of(L.prediction("nn3", q)), "--truth", In(L.images("membrane", q)),
                 "--output", Out(L.calibration))
        if calibrated:
            step(f"membrane_predicted_{q}", "-m", "neuron3d.calibrate", "--apply",
                 In(L.calibration), "--input_dir", images_of(L.prediction("nn3", q)),
                 "--output_dir", Out(L.membrane_predicted(q)))
        else:
            step(f"membrane_predicted_{q}", *p3d(
                "--operation", "png_to_tif", "--input_dir", images_of(L.prediction("nn3", q)),
                *into(L.membrane_predicted(q))))
        if thesis and (q != CHOICE_QUADRANT or validated("nn4")):  # NN-4's input or held out
            step(f"membrane_predicted_png_{q}", *p3d(
                "--operation", "tif_to_png", "--input_dir", In(L.membrane_predicted(q)),
                "--output_dir", Out(L.membrane_predicted_images(q))))
            combine(f"combine_membrane_cytoplasm_{q}", L.membrane_predicted_images(q),
                    L.images("cytoplasm", q), L.combined("membrane_cytoplasm", q))
        step(f"membrane_predicted_cons_{q}", *p3d(
            "--operation", "consecutive", "--input_dir", In(L.membrane_predicted(q)),
            "--output_dir", Out(L.membrane_predicted_pairs(q))))
        combine(f"combine_membrane_overlap_{q}", L.membrane_predicted_pairs(q),
                L.images("overlap", q), L.combined("membrane_overlap", q))

    # ---- NN-4 and NN-5 on b's predicted membranes, predicted on c --------------------------
    if thesis:
        cytoplasm_network("nn4")
    overlap_network("nn5")

    # ---- agglomeration: threshold chosen on d, applied to c ---------------------------------
    if agglomerate:
        d, c = CHOICE_QUADRANT, TEST_QUADRANT
        predict("nn5", d)
        membrane = {q: In(L.membrane_predicted(q)) for q in (d, c)}
        overlap = {q: images_of(L.prediction("nn5", q)) for q in (d, c)}
        truth = {q: L.quadrant_tif("label", q) for q in (d, c)}
        if options.chunks is not None:  # the sweep, agglomeration and scores blockwise
            made = {p for s in steps for p in s.outputs}
            for q in (d, c):
                membrane[q] = In(to_zarr(f"zarr_membrane_{q}", L.membrane_predicted(q)))
                store = L.work / f"overlap_predicted_nn5_{q}.zarr"
                if store not in made:  # --method both made c's for the thinning
                    to_zarr(f"zarr_overlap_nn5_{q}", L.prediction("nn5", q) / "images", store)
                overlap[q] = In(store)
                truth[q] = L.label_zarr(q)
        # 2-D fragments are the scripts' default: their commands (and keys) stay the same
        cut = () if options.fragments == "2d" else ("--fragments", options.fragments)
        step(f"sweep_agglomerate_{d}", "-m", "neuron3d.sweep",
             "--input_dir_membrane", membrane[d], "--input_dir_overlap", overlap[d],
             "--labels", In(truth[d]), "--evaluation", In(L.evaluation(d)),
             "--criterion", options.criterion, *cut, "--output", Out(L.sweep), *engine)
        step(f"agglomerate_{c}", "reconstruct3D.py", "--method", "agglomerate",
             "--input_dir_membrane", membrane[c], "--input_dir_overlap", overlap[c],
             "--merge_threshold_from", In(L.sweep), *cut,
             *into(L.agglomerated, L.agglomerated.name if options.chunks else None), *engine)
        step("evaluate_agglomerate", "evaluate3D.py", "--predicted", In(L.agglomerated),
             "--true", In(L.evaluation(c)), "--labels", In(truth[c]),
             "--output", Out(L.agglomerated_scores), *engine)

    # ---- NN-1 and NN-2 (--paths all) --------------------------------------------------------
    if options.paths == "all":
        for q in "ac":
            step(f"em_cons_{q}", *p3d("--operation", "consecutive", "--input_dir",
                                      In(L.quadrant_tif("em", q)),
                                      "--output_dir", Out(L.em_pairs(q))))
            combine(f"combine_em_cytoplasm_{q}", L.images("em", q), L.images("cytoplasm", q),
                    L.combined("em_cytoplasm", q))
            combine(f"combine_em_overlap_{q}", L.em_pairs(q), L.images("overlap", q),
                    L.combined("em_overlap", q))
        cytoplasm_network("nn1")
        overlap_network("nn2")

    # ---- the thesis' reconstruction of each combination, scored ------------------------------
    for cyto, over in COMBOS[options.paths] if thesis else ():
        recon, cytoplasm = L.reconstruction(cyto, over), L.cytoplasm_predicted(cyto)
        if options.chunks is not None:
            made = {p for s in steps for p in s.outputs}
            if L.zarr_of(cytoplasm) not in made:  # --paths all uses each cytoplasm twice
                to_zarr(f"zarr_cytoplasm_{cyto}", cytoplasm)
            cytoplasm = L.zarr_of(cytoplasm)
        truth = L.quadrant_tif("label", TEST_QUADRANT)
        if options.chunks is not None:
            truth = L.label_zarr(TEST_QUADRANT)
        step(f"reconstruct_{cyto}_{over}", "reconstruct3D.py",
             "--input_dir_cytoplasm", In(cytoplasm),
             "--input_dir_overlap", In(L.overlap_thinned(over)),
             *into(recon, recon.name if options.chunks else None), *engine)
        step(f"evaluate_{cyto}_{over}", "evaluate3D.py", "--predicted", In(recon),
             "--true", In(L.evaluation()), "--labels", In(truth),
             "--output", Out(L.scores(cyto, over)), *engine)
    return steps


def affinity_steps(step, options, layout, shape):
    """--method affinities: NN-6 (EM -> affinities, a 3D U-Net) trained on quadrants a and b
    with d as its validation volume, affinities predicted on d and c, the agglomeration's
    threshold chosen on d, c agglomerated and scored.  ``step(name, *argv, resume=...)`` adds
    a step."""
    L, d, c = layout, CHOICE_QUADRANT, TEST_QUADRANT
    net = L.network("nn6")
    affinity = ("-m", "imagetranslation.affinity")
    for q in (c, d):
        step(f"evaluation_{q}", *p3d("--operation", "evaluation", "--input_dir",
                                     In(L.quadrant_tif("label", q)), *into(L.evaluation(q))))
    step("train_nn6", *affinity, "--mode", "train",
         "--input_em", *(In(L.quadrant_tif("em", q)) for q in NETWORKS["nn6"].quadrant),
         "--input_labels", *(In(L.quadrant_tif("label", q)) for q in NETWORKS["nn6"].quadrant),
         "--validation_em", In(L.quadrant_tif("em", d)),
         "--validation_labels", In(L.quadrant_tif("label", d)),
         "--output_dir", Out(net), *affinity_args(options, shape), resume=("--checkpoint", net))
    for q in (d, c):
        step(f"predict_nn6_{q}", *affinity, "--mode", "test", "--checkpoint", In(net),
             "--input_em", In(L.quadrant_tif("em", q)),
             "--output", Out(L.affinities_predicted(q)),
             *(("--deterministic",) if options.deterministic else ()))
    step(f"sweep_agglomerate_{d}", "-m", "neuron3d.sweep",
         "--input_affinities", In(L.affinities_predicted(d)),
         "--labels", In(L.quadrant_tif("label", d)), "--evaluation", In(L.evaluation(d)),
         "--criterion", options.criterion, "--output", Out(L.sweep))
    step(f"agglomerate_{c}", "reconstruct3D.py", "--method", "agglomerate",
         "--input_affinities", In(L.affinities_predicted(c)),
         "--merge_threshold_from", In(L.sweep), *into(L.agglomerated))
    step("evaluate_agglomerate", "evaluate3D.py", "--predicted", In(L.agglomerated),
         "--true", In(L.evaluation(c)), "--labels", In(L.quadrant_tif("label", c)),
         "--output", Out(L.agglomerated_scores))


def step_records(layout, steps):
    """{step name: its record} for the steps of ``steps`` that have one: what the runner wrote
    after each finished step (``RUN/.steps/<name>.json``: command, input and output hashes,
    seconds); unreadable records count as none."""
    import json

    found = {}
    for step in steps:
        try:
            found[step.name] = json.loads((layout.steps_dir / f"{step.name}.json").read_text())
        except (OSError, ValueError):
            continue
    return found
