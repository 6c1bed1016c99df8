"""The thesis' automated run (``experiment_8.sh``) as data: options, file names, steps.

``bash experiment_8.sh [options]`` is a thin wrapper around ``python -m neuron3d.experiment``.
This module holds, in one place:

* the **options** and their validation (:func:`build_parser`, :func:`resolve`), and the two
  training recipes: the thesis' (ResNet generator, 2000 epochs) and ``--quick`` (a small
  ResNet sized to a laptop CPU);
* the **layout** of a run: every file name, spelled once (:class:`Layout`); ``report`` and
  ``figures`` import it instead of parsing names back;
* the **recipe**: :func:`plan` lists the steps top to bottom as the thesis runs them, each a
  :class:`Step` with its command (the thesis' own command lines), inputs and outputs;
* the **runner** (:class:`Runner`): a step is skipped only if the same command, on inputs with
  the same content, produced outputs that are still there unchanged.  A changed option changes
  the commands of the steps it affects; those re-run, and the steps downstream of them re-run
  exactly when their inputs' content changed.  An interrupted training resumes from its last
  checkpoint.

The steps, for quadrants a, b, c, d of the volume (a = bottom right, b = top right, c = top left,
d = bottom left; see ``process3D.py --operation split``):

1. split EM and labels into quadrants; ground-truth membrane, cytoplasm and overlap images;
2. NN-3 (EM -> membrane) trained on a, membranes predicted on b and c;
3. NN-4 (membrane -> cytoplasm) and NN-5 (two consecutive membranes -> overlap) trained on b's
   *predicted* membranes, cytoplasm and overlap predicted on c;
4. predicted overlaps thinned (``eroskele``), c reconstructed (``reconstruct3D.py``);
5. scored against c's evaluation volume (``evaluate3D.py``); ``report.json`` written.

``--paths all`` also trains NN-1 (EM -> cytoplasm) and NN-2 (two EM slices -> overlap) on a and
scores all four cytoplasm x overlap combinations.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .cli import ArgumentParser, run_cli

ROOT = Path(__file__).resolve().parents[1]
PROG = "experiment_8.sh"
#: Default synthetic volume of --demo (z, y, x).
DEMO_SHAPE = (32, 384, 384)


# ---- options --------------------------------------------------------------------------------

def build_parser():
    p = ArgumentParser(prog=PROG, description="The thesis' automated run, end to end: "
                       "NN-3 -> NN-4 / NN-5 on quadrants a, b, reconstruction and scores on c.")
    p.add_argument("--demo", action="store_true",
                   help="generate the project's synthetic data set and run with --quick")
    p.add_argument("--recipe", choices=sorted(RECIPES),
                   help="training recipe: thesis (the thesis' networks, default), quick (small "
                        "networks sized for a laptop CPU), real (wider networks, EM augmentations, "
                        "chosen end to end on a real FIB-SEM crop's quadrant d; use with "
                        "--minutes), real_calibrated (real with NN-3 unweighted and calibrated "
                        "on d: the best membranes by d's F1; see documentation/recipes.md)")
    p.add_argument("--quick", action="store_true",
                   help="small networks, crops and step counts (sized for a laptop CPU)")
    p.add_argument("--datasets", metavar="DIR",
                   help="folder with train-input.tif and train-labels.tif "
                        "(default datasets/, or datasets/demo with --demo)")
    p.add_argument("--work", metavar="DIR",
                   help="folder for the derived files (quadrants, images, predictions, the "
                        "reconstruction; default: the datasets folder, as in the thesis, or "
                        "RESULTS/RUN/datasets when that folder is read-only)")
    p.add_argument("--results", metavar="DIR", default="results",
                   help="results folder (default results/)")
    p.add_argument("--run", metavar="NAME",
                   help="run name: RESULTS/NAME/ and WORK/NAME.tif (default experiment_8, "
                        "demo: demo)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, metavar="N",
                        help="training epochs for every network (thesis: 2000)")
    length.add_argument("--steps", type=int, metavar="N",
                        help="training steps for every network (instead of epochs)")
    p.add_argument("--minutes", type=float, metavar="M",
                   help="wall-time budget of every network's training, in minutes (instead of "
                        "step counts; with --steps/--epochs whichever comes first); the report "
                        "records the steps each network reached")
    p.add_argument("--paths", choices=["thesis", "all"], default="thesis",
                   help="thesis (NN-3 -> NN-4 / NN-5, default) or all (also NN-1, NN-2)")
    p.add_argument("--method", choices=["thesis", "agglomerate", "both"], default="both",
                   help="reconstruction of c: the thesis' connected components, the "
                        "agglomeration over predicted affinities (threshold chosen on quadrant "
                        "d), or both side by side (default)")
    p.add_argument("--erosions", type=int, default=10, metavar="N",
                   help="erosions before skeletonizing predicted overlaps (default 10)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help=f"synthetic volume for --demo (default {' '.join(map(str, DEMO_SHAPE))})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic TensorFlow kernels and fixed thread counts in training "
                        "(the same numbers on every machine of the same kind; see README)")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: the predictions of c and d averaged over the "
                        "8 flips and transposes (translate.py --mode test --tta; 8x their "
                        "prediction time); b's predictions, NN-4's and NN-5's training "
                        "inputs, stay plain")
    big = p.add_argument_group("large volumes (see documentation/cluster.md)")
    big.add_argument("--chunks", type=int, nargs=3, metavar=("Z", "Y", "X"),
                     help="run the evaluation volumes, the thinning of the predicted overlaps, "
                          "the reconstruction and its evaluation through OME-Zarr stores of "
                          "these chunks, blockwise on dask (results equal to the default "
                          "in-memory run)")
    big.add_argument("--scheduler", metavar="SPEC",
                     help="with --chunks: local:N or tcp://HOST:PORT (default local:2)")
    big.add_argument("--memory_limit", metavar="BYTES",
                     help="with --chunks and --scheduler local:N: each worker's memory limit")
    p.add_argument("--force", action="store_true", help="re-run every step")
    p.add_argument("--dry_run", "--dry-run", action="store_true",
                   help="print every step's command and whether it would run; run nothing")
    return p


@dataclass(frozen=True)
class Options:
    """The validated options of a run (what report.json records)."""

    demo: bool
    recipe: str
    datasets: str
    work: str
    results: str
    run: str
    epochs: int | None
    steps: int | None
    minutes: float | None
    paths: str
    method: str
    erosions: int
    shape: tuple[int, int, int] | None
    seed: int
    deterministic: bool
    tta: bool = False
    chunks: tuple[int, int, int] | None = None
    scheduler: str | None = None
    memory_limit: str | None = None
    force: bool = field(default=False, compare=False)
    dry_run: bool = field(default=False, compare=False)


def _writable(folder):
    """Whether files may be created in ``folder`` (or in its nearest existing parent).

    A folder without any write permission bit counts as read-only even for root, who could
    write there anyway: a shared data folder marked read-only stays untouched.
    """
    folder = Path(folder).absolute()
    while not folder.exists():
        folder = folder.parent
    return (folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)
            and bool(folder.stat().st_mode & 0o222))


def resolve(args):
    """Validated :class:`Options` from parsed arguments.

    Raises
    ------
    ValueError
        For a negative count, a bad run name, --shape without --demo, a shape too small for
        quadrants, or a read-only data folder where --demo must write its synthetic data.
    """
    for flag in ("epochs", "steps", "erosions", "seed"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise ValueError(f"--{flag} must be >= 0, got {value}")
    if args.minutes is not None and not args.minutes > 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    if args.steps == 0 or args.epochs == 0:
        raise ValueError("--steps/--epochs must be >= 1 (a network needs at least one step)")
    if args.shape is not None and not args.demo:
        raise ValueError("--shape sets the synthetic volume of --demo; it needs --demo")
    shape = tuple(args.shape) if args.shape else (DEMO_SHAPE if args.demo else None)
    if shape is not None and (shape[0] < 1 or min(shape[1:]) < 8):
        raise ValueError(f"--shape must be at least 1 x 8 x 8 (quadrants of 4 x 4), got "
                         f"{' x '.join(map(str, shape))}")
    run = args.run if args.run is not None else ("demo" if args.demo else "experiment_8")
    if not run or run.startswith(".") or "/" in run or os.sep in run:
        raise ValueError(f"--run must be a plain name (no '/', not starting with '.'), got {run!r}")
    datasets = str(Path(args.datasets or ("datasets/demo" if args.demo else "datasets")))
    if args.demo and not _writable(datasets):
        raise ValueError(f"--demo writes its synthetic data into --datasets {datasets}, "
                         "which is not writable")
    work = args.work
    if work is None:
        work = datasets if _writable(datasets) else str(Path(args.results) / run / "datasets")
    if args.recipe is not None and args.quick and args.recipe != "quick":
        raise ValueError(f"--quick and --recipe {args.recipe} contradict each other")
    recipe = args.recipe or ("quick" if args.quick or args.demo else "thesis")
    chunks, scheduler = None, None
    if args.chunks is not None:
        from .blockwise import check_memory_limit, parse_scheduler
        from .zarrio import check_chunks

        chunks = check_chunks(args.chunks)
        scheduler = args.scheduler or "local:2"
        parse_scheduler(scheduler)
        if args.memory_limit is not None:
            check_memory_limit(args.memory_limit)
    elif args.scheduler is not None or args.memory_limit is not None:
        raise ValueError("--scheduler and --memory_limit go with --chunks Z Y X")
    return Options(demo=args.demo, recipe=recipe, datasets=datasets,
                   work=str(Path(work)), results=str(Path(args.results)), run=run,
                   epochs=args.epochs, steps=args.steps, minutes=args.minutes, paths=args.paths,
                   method=args.method, erosions=args.erosions, shape=shape, seed=args.seed,
                   deterministic=args.deterministic, tta=args.tta, chunks=chunks,
                   scheduler=scheduler, memory_limit=args.memory_limit, force=args.force,
                   dry_run=args.dry_run)


# ---- networks and file names ----------------------------------------------------------------

@dataclass(frozen=True)
class Network:
    """One of the thesis' five networks: what it maps and where it is trained."""

    key: str          #: "nn3"
    number: int       #: 3
    pairs: str        #: combined-image prefix: "em_membrane" (input_target)
    quadrant: str     #: the quadrant it is trained on
    title: str        #: human-readable

    @property
    def target(self):
        return self.pairs.split("_")[1]

    @property
    def train_dir(self):
        return f"T{self.number}_{self.pairs}_{self.quadrant}"

    def predict_dir(self, q):
        return f"P{self.number}_{self.pairs}_{q}"


NETWORKS = {n.key: n for n in (
    Network("nn1", 1, "em_cytoplasm", "a", "NN-1 (EM -> cytoplasm)"),
    Network("nn2", 2, "em_overlap", "a", "NN-2 (EM pair -> overlap)"),
    Network("nn3", 3, "em_membrane", "a", "NN-3 (EM -> membrane)"),
    Network("nn4", 4, "membrane_cytoplasm", "b", "NN-3 -> NN-4 (membrane -> cytoplasm)"),
    Network("nn5", 5, "membrane_overlap", "b", "NN-3 -> NN-5 (membrane pair -> overlap)"),
)}
#: (cytoplasm network, overlap network) pairs scored; the thesis' path first.
COMBOS = {"thesis": (("nn4", "nn5"),),
          "all": (("nn4", "nn5"), ("nn1", "nn2"), ("nn1", "nn5"), ("nn4", "nn2"))}
#: The quadrant reconstructed and scored.
TEST_QUADRANT = "c"
#: The held-out quadrant the agglomeration's threshold is chosen on (no network trains on it).
CHOICE_QUADRANT = "d"
#: Shown by --dry_run where a command needs the threshold chosen on d.
NOT_CHOSEN_YET = "<chosen on d>"


@dataclass(frozen=True)
class Layout:
    """Every file of a run, named once.

    ``data`` holds the inputs (``train-input.tif``, ``train-labels.tif``); ``work`` the derived
    files (the thesis keeps them in ``datasets/``); ``run_dir`` the networks, predictions, logs,
    scores and ``report.json``.
    """

    data: Path
    work: Path
    run_dir: Path
    run: str
    zarr: bool = False  #: the blockwise stages' stacks are .zarr stores (``--chunks``)

    @classmethod
    def of(cls, options):
        return cls(Path(options.datasets), Path(options.work),
                   Path(options.results) / options.run, options.run,
                   options.chunks is not None)

    def _stack(self, name):
        """``name.tif`` (or ``name.zarr`` with --chunks)."""
        return self.work / f"{name}{'.zarr' if self.zarr else '.tif'}"

    def label_zarr(self, q):
        """The ground-truth quadrant as a zarr store (--chunks)."""
        return self.work / f"label_{q}.zarr"

    def zarr_of(self, path):
        """The zarr copy of a .tif or slice folder (--chunks): ``<name>.zarr`` beside it."""
        path = Path(path)
        return path.with_name(f"{path.stem if path.suffix == '.tif' else path.name}.zarr")

    @property
    def em_volume(self):
        return self.data / "train-input.tif"

    @property
    def label_volume(self):
        return self.data / "train-labels.tif"

    def quadrant_tif(self, kind, q):
        """``em_<q>.tif`` or ``label_<q>.tif``."""
        return self.work / f"{kind}_{q}.tif"

    def images(self, kind, q):
        """Slice folders: ``em_<q>``, ``membrane_<q>``, ``cytoplasm_<q>``, ``overlap_<q>``."""
        return self.work / f"{kind}_{q}"

    def em_pairs(self, q):
        return self.work / f"em_cons_{q}"

    def combined(self, pairs, q):
        return self.work / "combined" / f"{pairs}_{q}"

    def evaluation(self, q=TEST_QUADRANT):
        return self._stack(f"evaluate_{q}")

    def network(self, key):
        return self.run_dir / NETWORKS[key].train_dir

    def prediction(self, key, q):
        """The trainer's test output folder (``images/NN-outputs.png``)."""
        return self.run_dir / NETWORKS[key].predict_dir(q)

    def membrane_predicted(self, q):
        return self.work / f"membrane_predicted_{q}.tif"

    def membrane_predicted_images(self, q):
        return self.work / f"membrane_predicted_{q}"

    def membrane_predicted_pairs(self, q):
        return self.work / f"membrane_predicted_cons_{q}"

    def cytoplasm_predicted(self, key, q=TEST_QUADRANT):
        return self.work / (f"cytoplasm_predicted_{q}.tif" if key == "nn4"
                            else f"cytoplasm_predicted_{key}_{q}.tif")

    def overlap_thinned(self, key, q=TEST_QUADRANT):
        name = (f"overlap_predicted_{q}_eroskele" if key == "nn5"
                else f"overlap_predicted_{key}_{q}_eroskele")
        return self.work / (f"{name}.zarr" if self.zarr else name)

    def reconstruction_name(self, cyto, over):
        return self.run if (cyto, over) == COMBOS["thesis"][0] else f"{self.run}_{cyto}_{over}"

    def reconstruction(self, cyto, over):
        return self._stack(self.reconstruction_name(cyto, over))

    def scores(self, cyto, over):
        return self.run_dir / f"scores_{cyto}_{over}.json"

    @property
    def sweep(self):
        """The threshold sweep of the agglomeration on the held-out quadrant, and the choice."""
        return self.run_dir / f"sweep_agglomerate_{CHOICE_QUADRANT}.json"

    @property
    def calibration(self):
        """NN-3's calibration on the held-out quadrant (:mod:`neuron3d.calibrate`)."""
        return self.run_dir / f"calibration_nn3_{CHOICE_QUADRANT}.json"

    @property
    def agglomerated(self):
        return self.work / f"{self.run}_agglomerate.tif"

    @property
    def agglomerated_scores(self):
        return self.run_dir / "scores_agglomerate.json"

    def chosen_threshold(self):
        """The threshold the sweep chose, as text (:data:`NOT_CHOSEN_YET` before the sweep)."""
        from .sweep import chosen_threshold

        try:
            return f"{chosen_threshold(self.sweep):g}"
        except ValueError:
            return NOT_CHOSEN_YET

    @property
    def report(self):
        return self.run_dir / "report.json"

    @property
    def options_file(self):
        return self.run_dir / "options.json"

    @property
    def steps_dir(self):
        return self.run_dir / ".steps"

    @property
    def logs(self):
        return self.run_dir / "logs"

    def as_dict(self):
        """Absolute paths, so that report and figures find the files from any folder."""
        return {"data": str(self.data.absolute()), "work": str(self.work.absolute()),
                "run_dir": str(self.run_dir.absolute()), "run": self.run, "zarr": self.zarr}

    @classmethod
    def from_dict(cls, d):
        return cls(Path(d["data"]), Path(d["work"]), Path(d["run_dir"]), d["run"],
                   d.get("zarr", False))


# ---- training recipes -----------------------------------------------------------------------

#: The thesis' training options (experiment_8.sh of the thesis).
THESIS_TRAIN = ("--Y_loss", "square", "--model", "pix2pix", "--generator", "resnet", "--fliplr",
                "--flipud", "--transpose", "--display_freq", "500", "--gan_weight", "0")
#: Training steps of the quick and real recipes: NN-3, and each of the others.
QUICK_STEPS = {"nn3": 1500, "other": 700}
THESIS_EPOCHS = 2000
#: The small recipes: options beyond the common ones (crop, lr, logging). ``real`` was chosen
#: on quadrant d of a real FIB-SEM crop at equal wall time (documentation/recipes.md).
RECIPES = {
    "thesis": None,
    "quick": ("--Y_loss", "square", "--model", "pix2pix", "--generator", "resnet", "--ngf", "16",
              "--n_res_blocks", "4"),
    "real": ("--Y_loss", "square", "--model", "pix2pix", "--generator", "resnet", "--ngf", "32",
             "--n_res_blocks", "6", "--augment", "elastic,intensity,blur"),
}
#: ``real_calibrated``: real's networks, NN-3 unweighted and calibrated on d (below); the best
#: NN-3 by d's membrane F1, where ``real`` is the best by d's reconstruction error.
RECIPES["real_calibrated"] = RECIPES["real"]

#: Options of one network of a recipe, after the recipe's: ``real`` weighs NN-3's membrane
#: pixels (--pos_weight, chosen on d: documentation/recipes.md), so that its output's 0.5
#: falls near where d's membrane F1 peaks; NN-4 and NN-5 keep the plain L2 loss.
NETWORK_OPTIONS = {"real": {"nn3": ("--pos_weight", "2")}}

#: Recipes whose NN-3 is calibrated on d (neuron3d.calibrate): the 8-bit level of d's best
#: membrane F1 becomes 0.5 of every predicted membrane image, when d is predicted (the
#: agglomeration).  documentation/recipes.md, "Calibration on d".
CALIBRATED_RECIPES = ("real_calibrated",)

#: Recipes whose networks validate on d (--validation_dir) and keep their best weights, with
#: the networks that have d's images (the agglomerating reconstruction predicts d with them).
VALIDATED_RECIPES = ("real", "real_calibrated")
VALIDATED_NETWORKS = ("nn3", "nn5")


def quick_crop(shape):
    """The small recipes' crop: the quadrant's shorter side, at most 128, a multiple of 4."""
    return min(shape[1] // 2, shape[2] // 2, 128) // 4 * 4


def training_args(options, shape, key):
    """translate.py --mode train options of network ``key`` for a volume of ``shape``."""
    if options.recipe != "thesis":
        crop = quick_crop(shape)
        if crop < 4:
            raise ValueError(f"quadrants of {shape[1] // 2} x {shape[2] // 2} are too small for "
                             f"the {options.recipe} networks (volume "
                             f"{' x '.join(map(str, shape))})")
        args = [*RECIPES[options.recipe], *NETWORK_OPTIONS.get(options.recipe, {}).get(key, ()),
                "--crop_size", str(crop),
                "--scale_size", str(crop), "--lr", "0.001", "--gan_weight", "0",
                "--progress_freq", "100", "--summary_freq", "20", "--display_freq", "500"]
        length = ["--max_steps", str(QUICK_STEPS["nn3" if key == "nn3" else "other"])]
    else:
        args, length = list(THESIS_TRAIN), ["--max_epochs", str(THESIS_EPOCHS)]
    if options.steps is not None:
        length = ["--max_steps", str(options.steps)]
    elif options.epochs is not None:
        length = ["--max_epochs", str(options.epochs)]
    elif options.minutes is not None:
        length = []  # the budget alone ends training
    if options.minutes is not None:
        length += ["--max_minutes", f"{options.minutes:g}"]
    extra = ["--deterministic"] if options.deterministic else []
    return args + length + ["--seed", str(options.seed)] + extra


# ---- steps ----------------------------------------------------------------------------------

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


def _command(script, *args):
    return (script, *map(str, args))


def p3d(*args):
    return _command("process3D.py", *args)


def _step(steps, name, argv, inputs, outputs, resume=None):
    steps.append(Step(name, tuple(argv), tuple(map(Path, inputs)), tuple(map(Path, outputs)),
                      tuple(resume) if resume else None))


def plan(options, layout, shape):
    """The recipe: every step of the run, in the order the thesis runs them.

    Parameters
    ----------
    options : Options
    layout : Layout
    shape : tuple of int
        (z, y, x) of the whole volume (sizes the quick recipe's crops).

    Returns
    -------
    list of Step
    """
    L, steps = layout, []
    # --chunks: the blockwise stages run on dask, .zarr to .zarr
    engine = () if options.chunks is None else (
        "--chunks", *options.chunks, "--scheduler", options.scheduler,
        *(("--memory_limit", options.memory_limit) if options.memory_limit else ()))

    def step(name, argv, inputs, outputs, resume=None):
        _step(steps, name, argv, inputs, outputs, resume)

    def to_zarr(name, source, store=None):
        """--chunks: a step converting ``source`` (.tif or slices) to zarr; returns the store."""
        store = store or L.zarr_of(source)
        step(name, p3d("--operation", "tif_to_zarr", "--input_dir", source, "--output_dir",
                       store, "--chunks", *options.chunks), [source], [store])
        return store

    def combine(name, a, b, out):
        step(name, _command("imagetranslation/tools/process.py", "--operation", "combine",
                            "--input_dir", a, "--b_dir", b, "--output_dir", out), [a, b], [out])

    def train(key):
        net, out = NETWORKS[key], L.network(key)
        data = L.combined(net.pairs, net.quadrant)
        inputs, validation = [data], []
        if options.recipe in VALIDATED_RECIPES and agglomerate and key in VALIDATED_NETWORKS:
            # early stopping by checkpoint choice on d, the quadrant choices are made on
            held_out = L.combined(net.pairs, CHOICE_QUADRANT)
            inputs.append(held_out)
            validation = ["--validation_dir", held_out]
        argv = _command("imagetranslation/translate.py", "--mode", "train", "--input_dir", data,
                        "--output_dir", out, *training_args(options, shape, key), *validation)
        step(f"train_{key}", argv, inputs, [out], resume=argv + ("--checkpoint", str(out)))

    def predict(key, q):
        data = L.combined(NETWORKS[key].pairs, q)
        step(f"predict_{key}_{q}", _command(
            "imagetranslation/translate.py", "--mode", "test", "--checkpoint", L.network(key),
            "--input_dir", data, "--output_dir", L.prediction(key, q), "--model", "pix2pix",
            *(("--tta",) if options.tta and q != "b" else ())),
            [L.network(key), data], [L.prediction(key, q)])

    def cytoplasm_network(key):
        q = TEST_QUADRANT
        train(key)
        predict(key, q)
        out = L.cytoplasm_predicted(key, q)
        step(f"cytoplasm_predicted_{key}_{q}", p3d(
            "--operation", "png_to_tif", "--input_dir", f"{L.prediction(key, q)}/images/",
            "--output_dir", f"{out.parent}/", "--name", out.stem), [L.prediction(key, q)], [out])

    def overlap_network(key):
        q = TEST_QUADRANT
        train(key)
        predict(key, q)
        out = L.overlap_thinned(key, q)
        if not thesis:  # the agglomeration reads NN-5's overlaps un-thinned
            return
        source, folder = f"{L.prediction(key, q)}/images/", L.prediction(key, q)
        if options.chunks is not None:
            source = folder = to_zarr(f"zarr_overlap_{key}_{q}", L.prediction(key, q) / "images",
                                      L.work / f"overlap_predicted_{key}_{q}.zarr")
        step(f"eroskele_{key}_{q}", p3d(
            "--operation", "eroskele", "--input_dir", source, "--output_dir", out,
            "--erosions", options.erosions, *engine), [folder], [out])

    # ---- data -----------------------------------------------------------------------------
    if options.demo:
        step("synthetic", p3d("--operation", "synthetic", "--output_dir", L.data,
                              "--shape", *options.shape, "--seed", options.seed),
             [], [L.em_volume, L.label_volume])
    quadrants = "abcd"
    step("split_em", p3d("--operation", "split", "--input_dir", L.em_volume,
                         "--output_dir", f"{L.work}/", "--split", "em"),
         [L.em_volume], [L.quadrant_tif("em", q) for q in quadrants])
    step("split_label", p3d("--operation", "split", "--input_dir", L.label_volume,
                            "--output_dir", f"{L.work}/", "--split", "label"),
         [L.label_volume], [L.quadrant_tif("label", q) for q in quadrants])
    agglomerate = options.method in ("agglomerate", "both")
    thesis = options.method in ("thesis", "both")  # the thesis' reconstruction needs NN-4
    for q in "abcd" if agglomerate else "abc":
        step(f"em_{q}", p3d("--operation", "tif_to_png", "--input_dir", L.quadrant_tif("em", q),
                            "--output_dir", L.images("em", q)),
             [L.quadrant_tif("em", q)], [L.images("em", q)])
        for op in ("membrane", "cytoplasm", "overlap"):
            step(f"{op}_{q}", p3d("--operation", op, "--input_dir", L.quadrant_tif("label", q),
                                  "--output_dir", L.images(op, q)),
                 [L.quadrant_tif("label", q)], [L.images(op, q)])
        combine(f"combine_em_membrane_{q}", L.images("em", q), L.images("membrane", q),
                L.combined("em_membrane", q))
    for q in TEST_QUADRANT + (CHOICE_QUADRANT if agglomerate else ""):
        if options.chunks is None:
            step(f"evaluation_{q}", p3d("--operation", "evaluation", "--input_dir",
                                        L.quadrant_tif("label", q), "--output_dir",
                                        f"{L.work}/", "--name", L.evaluation(q).stem),
                 [L.quadrant_tif("label", q)], [L.evaluation(q)])
        else:
            labels = to_zarr(f"zarr_label_{q}", L.quadrant_tif("label", q))
            step(f"evaluation_{q}", p3d("--operation", "evaluation", "--input_dir", labels,
                                        "--output_dir", L.evaluation(q), *engine),
                 [labels], [L.evaluation(q)])

    # ---- NN-3: EM -> membrane, trained on a, predicted on b and c (and d) -------------------
    train("nn3")
    membrane_quadrants = "bcd" if agglomerate else "bc"
    calibrated = options.recipe in CALIBRATED_RECIPES and agglomerate
    if calibrated:  # d first: its best threshold becomes 0.5 of every quadrant's membranes
        membrane_quadrants = CHOICE_QUADRANT + membrane_quadrants.replace(CHOICE_QUADRANT, "")
    for q in membrane_quadrants:
        predict("nn3", q)
        if calibrated and q == CHOICE_QUADRANT:
            step("calibrate_nn3", ("-m", "neuron3d.calibrate", "--choose", "--input_dir",
                                   f"{L.prediction('nn3', q)}/images/", "--truth",
                                   str(L.images("membrane", q)), "--output", str(L.calibration)),
                 [L.prediction("nn3", q), L.images("membrane", q)], [L.calibration])
        if calibrated:
            step(f"membrane_predicted_{q}", (
                "-m", "neuron3d.calibrate", "--apply", str(L.calibration), "--input_dir",
                f"{L.prediction('nn3', q)}/images/", "--output_dir",
                str(L.membrane_predicted(q))),
                [L.prediction("nn3", q), L.calibration], [L.membrane_predicted(q)])
        else:
            step(f"membrane_predicted_{q}", p3d(
                "--operation", "png_to_tif", "--input_dir", f"{L.prediction('nn3', q)}/images/",
                "--output_dir", f"{L.work}/", "--name", L.membrane_predicted(q).stem),
                [L.prediction("nn3", q)], [L.membrane_predicted(q)])
        if thesis and q != CHOICE_QUADRANT:  # NN-4's input (d only feeds the agglomeration)
            step(f"membrane_predicted_png_{q}", p3d(
                "--operation", "tif_to_png", "--input_dir", L.membrane_predicted(q),
                "--output_dir", L.membrane_predicted_images(q)),
                [L.membrane_predicted(q)], [L.membrane_predicted_images(q)])
            combine(f"combine_membrane_cytoplasm_{q}", L.membrane_predicted_images(q),
                    L.images("cytoplasm", q), L.combined("membrane_cytoplasm", q))
        step(f"membrane_predicted_cons_{q}", p3d(
            "--operation", "consecutive", "--input_dir", L.membrane_predicted(q),
            "--output_dir", L.membrane_predicted_pairs(q)),
            [L.membrane_predicted(q)], [L.membrane_predicted_pairs(q)])
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
        overlaps = {q: f"{L.prediction('nn5', q)}/images/" for q in (d, c)}
        step(f"sweep_agglomerate_{d}", ("-m", "neuron3d.sweep", "--input_dir_membrane",
                                        str(L.membrane_predicted(d)), "--input_dir_overlap",
                                        overlaps[d], "--labels", str(L.quadrant_tif("label", d)),
                                        "--evaluation", str(L.evaluation(d)),
                                        "--output", str(L.sweep)),
             [L.membrane_predicted(d), L.prediction("nn5", d), L.quadrant_tif("label", d),
              L.evaluation(d)], [L.sweep])
        step(f"agglomerate_{c}", _command(
            "reconstruct3D.py", "--method", "agglomerate", "--input_dir_membrane",
            L.membrane_predicted(c), "--input_dir_overlap", overlaps[c],
            "--merge_threshold", L.chosen_threshold(), "--output_dir", f"{L.work}/",
            "--name", L.agglomerated.stem),
            [L.membrane_predicted(c), L.prediction("nn5", c), L.sweep], [L.agglomerated])
        truth = L.quadrant_tif("label", c)
        step("evaluate_agglomerate", _command(
            "evaluate3D.py", "--predicted", L.agglomerated, "--true", L.evaluation(c),
            "--labels", truth, "--output", L.agglomerated_scores),
            [L.agglomerated, L.evaluation(c), truth], [L.agglomerated_scores])

    # ---- NN-1 and NN-2 (--paths all) --------------------------------------------------------
    if options.paths == "all":
        for q in "ac":
            step(f"em_cons_{q}", p3d("--operation", "consecutive", "--input_dir",
                                     L.quadrant_tif("em", q), "--output_dir", L.em_pairs(q)),
                 [L.quadrant_tif("em", q)], [L.em_pairs(q)])
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
        step(f"reconstruct_{cyto}_{over}", _command(
            "reconstruct3D.py", "--input_dir_cytoplasm", cytoplasm,
            "--input_dir_overlap", L.overlap_thinned(over), "--output_dir", f"{L.work}/",
            "--name", recon.name if options.chunks else recon.stem, *engine),
            [cytoplasm, L.overlap_thinned(over)], [recon])
        truth = L.quadrant_tif("label", TEST_QUADRANT)
        if options.chunks is not None:
            truth = L.label_zarr(TEST_QUADRANT)
        step(f"evaluate_{cyto}_{over}", _command(
            "evaluate3D.py", "--predicted", recon, "--true", L.evaluation(), "--labels", truth,
            "--output", L.scores(cyto, over), *engine),
            [recon, L.evaluation(), truth], [L.scores(cyto, over)])
    return steps


# ---- fingerprints and the runner ------------------------------------------------------------

def _is_temporary(path):
    return path.name.startswith(".") and ".part" in path.name


def _files(path):
    """The files that make up ``path`` (itself, or every file under a folder), sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file()
                  and not any(_is_temporary(part) for part in p.relative_to(path).parents)
                  and not _is_temporary(p))


class Fingerprints:
    """Content hashes of files and folders, cached by (size, mtime) across invocations."""

    def __init__(self, cache_file):
        self.cache_file = Path(cache_file)
        try:
            self.cache = json.loads(self.cache_file.read_text())
        except (OSError, ValueError):
            self.cache = {}

    def file(self, path):
        stat = path.stat()
        key = str(path.absolute())
        cached = self.cache.get(key)
        if cached and cached[0] == stat.st_size and cached[1] == stat.st_mtime_ns:
            return cached[2]
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        self.cache[key] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
        return self.cache[key][2]

    def of(self, path):
        """sha256 of a file, or of a folder's relative names and file hashes; None if missing."""
        path = Path(path)
        if not path.exists():
            return None
        if path.is_file():
            return self.file(path)
        digest = hashlib.sha256()
        for f in _files(path):
            digest.update(f"{f.relative_to(path)}\0{self.file(f)}\n".encode())
        return "dir:" + digest.hexdigest()

    def save(self):
        from .io import write_file

        write_file(self.cache_file, json.dumps(self.cache) + "\n")


def _die_with_parent():
    """In the child: get SIGKILL when the runner dies (Linux), so no orphan keeps writing."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _remove(path):
    import shutil

    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


class Runner:
    """Runs steps, skipping those whose command, inputs and outputs are as recorded.

    A record ``RUN/.steps/<name>.json`` is written after a step succeeds: its command, the
    content hash of each input and each output, and its time.  A step runs when it has no
    record, when its command or an input's content differs from the record, or when an output
    is missing or changed since.  Before it runs, its old outputs are removed, except for an
    interrupted training (same command and inputs), which resumes from its checkpoint.
    """

    def __init__(self, layout, force=False, python=None, out=None):
        self.layout = layout
        self.force = force
        self.python = python or sys.executable
        self.out = out or sys.stdout
        self.hashes = Fingerprints(layout.steps_dir / "hashes.json")
        self.ran, self.skipped = [], []

    def _record_path(self, step, kind="json"):
        return self.layout.steps_dir / f"{step.name}.{kind}"

    def _load(self, path):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def state(self, step):
        """(done, reason) of ``step`` given its record and the files on disk now."""
        inputs = {str(p): self.hashes.of(p) for p in step.inputs}
        if self.force:
            return False, "--force", inputs
        record = self._load(self._record_path(step))
        if record is None:
            return False, "not run before", inputs
        if record.get("command") != list(step.argv):
            return False, "its command changed", inputs
        for path, digest in inputs.items():
            if record.get("inputs", {}).get(path) != digest:
                return False, f"input {path} changed", inputs
        for path in step.outputs:
            if record.get("outputs", {}).get(str(path)) != self.hashes.of(path):
                return False, f"output {path} is missing or changed", inputs
        return True, "same command, same inputs", inputs

    def run(self, step, dry_run=False):
        from .io import write_file

        done, reason, inputs = self.state(step)
        if done:
            print(f"== {step.name}: done before ({reason}), skipped", file=self.out, flush=True)
            self.skipped.append(step.name)
            return
        started_file = self._record_path(step, "started")
        started = self._load(started_file)
        key = {"command": list(step.argv), "inputs": inputs}
        resumable = (step.resume is not None and not self.force and started == key
                     and any((p / "checkpoint").exists() for p in step.outputs if p.is_dir()))
        argv = step.resume if resumable else step.argv
        why = "resuming an interrupted run" if resumable else reason
        print(f"== {step.name} ({why})", file=self.out, flush=True)
        if dry_run:
            print(f"   {shlex.join(['python', *argv])}", file=self.out, flush=True)
            return
        from .io import remove_stale_temporaries

        for path in step.outputs:
            remove_stale_temporaries(path)
            if not resumable:
                _remove(path)
        self._record_path(step).unlink(missing_ok=True)
        self.layout.logs.mkdir(parents=True, exist_ok=True)
        write_file(started_file, json.dumps(key) + "\n")
        log = self.layout.logs / f"{step.name}.log"
        start = time.monotonic()
        if argv[0] == "-m":  # a module of this package
            command = [self.python, *argv]
        else:  # a script of this repository
            command = [self.python, str(ROOT / argv[0]), *argv[1:]]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        with open(log, "w") as handle:
            code = subprocess.call(command, stdout=handle,
                                   stderr=subprocess.STDOUT, env=env,
                                   preexec_fn=_die_with_parent)
        seconds = round(time.monotonic() - start, 1)
        if code != 0:
            tail = "\n".join("    " + line for line in log.read_text().splitlines()[-5:])
            raise StepFailed(f"{PROG}: step '{step.name}' failed (exit {code}); its log: {log}"
                             f"\n{tail}")
        missing = [str(p) for p in step.outputs if not p.exists()]
        if missing:
            raise StepFailed(f"{PROG}: step '{step.name}' did not write {', '.join(missing)}; "
                             f"its log: {log}")
        record = {"command": list(step.argv), "inputs": inputs,
                  "outputs": {str(p): self.hashes.of(p) for p in step.outputs},
                  "seconds": seconds, "resumed": resumable,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        write_file(self._record_path(step), json.dumps(record, indent=1) + "\n")
        started_file.unlink(missing_ok=True)
        self.hashes.save()
        self.ran.append(step.name)

    def records(self, steps):
        """{step name: its record} for the steps that have one."""
        found = {}
        for step in steps:
            record = self._load(self._record_path(step))
            if record is not None:
                found[step.name] = record
        return found


class StepFailed(RuntimeError):
    """A step exited with an error (exit status 1 of the run; the message names its log)."""


# ---- the run --------------------------------------------------------------------------------

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


def recipe_summary(options, shape):
    kind = options.recipe
    first, other = (training_args(options, shape, key) for key in ("nn3", "nn4"))
    limits = [f"{flag} {first[i + 1]}" + (f" / {other[i + 1]}" if other[i + 1] != first[i + 1]
                                          else "")
              for i, flag in enumerate(first)
              if flag in ("--max_steps", "--max_epochs", "--max_minutes")]
    return f"{kind} training ({', '.join(limits)})"


def execute(options):
    """Run (or with ``dry_run`` list) the whole recipe; returns the report dict (or None)."""
    layout = Layout.of(options)
    shape = volume_shape(options, layout)
    steps = plan(options, layout, shape)
    print(f"{PROG}: data {layout.data} ({' x '.join(map(str, shape))}), derived files "
          f"{layout.work}, results {layout.run_dir}, paths {options.paths}, "
          f"{recipe_summary(options, shape)}", flush=True)
    if options.work == str(Path(options.results) / options.run / "datasets") \
            and options.work != options.datasets:
        print(f"{PROG}: note: {layout.data} is read-only; derived files go to {layout.work}",
              flush=True)
    runner = Runner(layout, force=options.force)
    start = time.monotonic()
    for name in [s.name for s in steps]:
        # Planned again before each step: a command may use what an earlier step chose
        # (the agglomeration's threshold, chosen on quadrant d).
        steps = plan(options, layout, shape)
        runner.run(next(s for s in steps if s.name == name), dry_run=options.dry_run)
    if options.dry_run:
        return None
    from .io import write_file
    from .report import build_report, summary_line

    write_file(layout.options_file, json.dumps(options_record(options, layout), indent=2) + "\n")
    report = build_report(layout, options_record(options, layout), steps,
                          runner.records(steps), runner.ran,
                          total_seconds=round(time.monotonic() - start, 1))
    write_file(layout.report, json.dumps(report, indent=2) + "\n")
    if options.method != "agglomerate":  # the thesis' evaluation block, as the thesis printed it
        print()
        print((layout.logs / f"evaluate_{'_'.join(COMBOS['thesis'][0])}.log").read_text().rstrip())
    print()
    print(summary_line(report))
    print(f"{PROG}: finished in {time.monotonic() - start:.0f} s ({len(runner.ran)} steps run, "
          f"{len(runner.skipped)} skipped); report: {layout.report}")
    return report


def options_record(options, layout):
    """The options a run's numbers came from, and its layout (for report.json and figures)."""
    record = asdict(options)
    del record["force"], record["dry_run"]
    record["shape"] = list(options.shape) if options.shape else None
    return {"options": record, "layout": layout.as_dict()}


def main(argv=None):
    args = build_parser().parse_args(argv)

    def body():
        try:
            execute(resolve(args))
        except StepFailed as exc:
            print(exc, file=sys.stderr)
            return 1
        return 0

    return run_cli(PROG, body)


if __name__ == "__main__":
    raise SystemExit(main())
