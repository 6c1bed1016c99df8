"""The recipe of ``experiment_8.sh`` as data: its options, networks, file names and training
recipes.  Nothing here runs a process.

* the **options** and their validation (:func:`build_parser`, :func:`resolve`), checked in full
  before any step runs;
* the five **networks** and the **layout** of a run: every file name, spelled once
  (:class:`Layout`); ``report`` and ``figures`` import it instead of parsing names back;
* the **training recipes**: the thesis' (ResNet generator, 2000 epochs), ``quick`` (a small
  ResNet sized to a laptop CPU), ``real`` and ``real_calibrated`` (:func:`training_args`).

The steps themselves are :func:`neuron3d.plan.plan`; :mod:`neuron3d.experiment` runs them.

Its length (a little over 550 lines since NN-6 joined) is that of these four tables, kept in
one module so that a run's options, names and recipes are read in one place; the options'
parser and checks are the part to move out next.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .agglomerate import FRAGMENT_MODES
from .cli import ArgumentParser
from .thresholds import CRITERIA, DEFAULT_CRITERION

PROG = "experiment_8.sh"
#: Default synthetic volume of --demo (z, y, x).
DEMO_SHAPE = (32, 384, 384)


# ---- options --------------------------------------------------------------------------------

#: --method: the reconstructions of c each runs (``affinities``: NN-6's, without the 2D networks).
METHODS = {"thesis": ("thesis",), "agglomerate": ("agglomerate",),
           "both": ("thesis", "agglomerate"), "affinities": ("affinities",)}


def runs(method, reconstruction):
    """Whether --method ``method`` runs ``reconstruction`` (thesis, agglomerate, affinities)."""
    return reconstruction in METHODS[method]


def agglomerates(method):
    """Whether --method ``method`` chooses a merge threshold on d."""
    return runs(method, "agglomerate") or runs(method, "affinities")


def build_parser():
    p = ArgumentParser(prog=PROG, description="The thesis' automated run, end to end: "
                       "NN-3 -> NN-4 / NN-5 on quadrants a, b, reconstruction and scores on c.")
    p.add_argument("--demo", action="store_true",
                   help="generate the project's synthetic data set and run with --quick, "
                        "deterministically (--deterministic, unless --no_deterministic)")
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
    p.add_argument("--method", choices=list(METHODS), default="both",
                   help="reconstruction of c: thesis, agglomerate (NN-3's membranes and "
                        "NN-5's overlaps agglomerated, threshold chosen on d), both (default), "
                        "or affinities (NN-6, a 3D U-Net on a and b for 2 x --minutes, EM -> "
                        "affinities, agglomerated)")
    p.add_argument("--erosions", type=int, default=10, metavar="N",
                   help="erosions before skeletonizing predicted overlaps (default 10)")
    p.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"),
                   help=f"synthetic volume for --demo (default {' '.join(map(str, DEMO_SHAPE))})")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    determinism = p.add_mutually_exclusive_group()
    determinism.add_argument(
        "--deterministic", action="store_true", default=None,
        help="deterministic TensorFlow kernels, fixed thread counts and oneDNN capped at one "
             "instruction set in training (the same numbers on every x86-64 machine; see "
             "documentation/trainer.md); the default with --demo")
    determinism.add_argument(
        "--no_deterministic", "--no-deterministic", dest="deterministic", action="store_false",
        help="the fastest kernels of this machine instead (--demo's numbers then depend on "
             "the machine); the default without --demo")
    p.add_argument("--tta", action="store_true",
                   help="test-time augmentation: the predictions of c and d averaged over the "
                        "8 flips and transposes (translate.py --mode test --tta; 8x their "
                        "prediction time); b's predictions, NN-4's and NN-5's training "
                        "inputs, stay plain")
    p.add_argument("--views", action="store_true",
                   help="for isotropic volumes (FIB-SEM): NN-3 predicts each quadrant also "
                        "sliced along y and along x, and its membranes are the mean of the "
                        "three views (translate.py --mode test --views; 3x NN-3's prediction "
                        "time; on fibsem-medulla's d the same network's 1-pixel boundary F1 "
                        "rose from 0.899 to 0.918, documentation/real_em.md)")
    p.add_argument("--fragments", choices=FRAGMENT_MODES,
                   help="how the agglomeration cuts the membranes into fragments: 2d, a "
                        "watershed per slice (the default), or 3d, one watershed of each "
                        "quadrant, for isotropic volumes (FIB-SEM; with --chunks one per "
                        "block of Z slices, at least 64 advised; documentation/real_em.md)")
    p.add_argument("--criterion", choices=sorted(CRITERIA), default=DEFAULT_CRITERION,
                   help="how the agglomeration's threshold is chosen on d: voi = the lowest "
                        "VOI split + merge against d's labels (ties: adapted Rand error), "
                        "rand = the lowest adapted Rand error (default %(default)s)")
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
    views: bool = False
    criterion: str = "voi"
    fragments: str = "2d"
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


def _check_folder(path, flag, writable=True):
    """ValueError naming ``flag`` unless ``path`` is a folder (or can be made one) that this
    run may write to (``writable``; :func:`_writable`)."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise ValueError(f"{flag} {path} must be a folder, but it is a file" if existing == path
                         else f"{flag} {path} cannot be a folder ({existing} is a file)")
    if writable and not _writable(path):
        raise ValueError(f"{flag} {path} is not writable (no write permission on {existing})")


def resolve(args):
    """Validated :class:`Options` from parsed arguments: every option is checked here, before
    any step runs.

    Raises
    ------
    ValueError
        For a negative count, a budget that is not a finite number of minutes, a bad run
        name, --shape without --demo, a shape too small for quadrants, a folder option naming
        a file, a read-only --work or --results, or a read-only data folder where --demo must
        write its synthetic data.
    """
    for flag in ("epochs", "steps", "erosions", "seed"):
        value = getattr(args, flag)
        if value is not None and value < 0:
            raise ValueError(f"--{flag} must be >= 0, got {value}")
    if args.minutes is not None and not args.minutes > 0:
        raise ValueError(f"--minutes must be > 0, got {args.minutes}")
    if args.minutes is not None and not math.isfinite(args.minutes):
        raise ValueError(f"--minutes must be a finite number of minutes, got {args.minutes}")
    if args.steps == 0 or args.epochs == 0:
        raise ValueError("--steps/--epochs must be >= 1 (a network needs at least one step)")
    not_nn6 = {"--epochs": args.epochs is not None, "--paths all": args.paths == "all",
               "--chunks": args.chunks is not None, "--tta": args.tta, "--views": args.views}
    for flag in (f for f, given in not_nn6.items() if given and args.method == "affinities"):
        raise ValueError(f"{flag} does not apply to --method affinities (NN-6 trains by steps "
                         "or --minutes, in memory, without the 2-D networks)")
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
    _check_folder(datasets, "--datasets", writable=False)
    _check_folder(args.results, "--results")
    _check_folder(Path(args.results) / run, "--results/--run")
    if args.work is not None:
        _check_folder(args.work, "--work")
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
    if args.fragments is not None and args.method not in ("agglomerate", "both"):
        raise ValueError(f"--fragments is for the agglomeration (--method agglomerate or "
                         f"both), not --method {args.method}")
    return Options(demo=args.demo, recipe=recipe, datasets=datasets,
                   work=str(Path(work)), results=str(Path(args.results)), run=run,
                   epochs=args.epochs, steps=args.steps, minutes=args.minutes, paths=args.paths,
                   method=args.method, erosions=args.erosions, shape=shape, seed=args.seed,
                   deterministic=args.demo if args.deterministic is None
                   else args.deterministic, tta=args.tta, views=args.views,
                   criterion=args.criterion, fragments=args.fragments or "2d",
                   chunks=chunks,
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
    Network("nn6", 6, "em_affinities", "ab", "NN-6 (EM -> affinities, 3D U-Net)"),
)}
#: (cytoplasm network, overlap network) pairs scored; the thesis' path first.
COMBOS = {"thesis": (("nn4", "nn5"),),
          "all": (("nn4", "nn5"), ("nn1", "nn2"), ("nn1", "nn5"), ("nn4", "nn2"))}
#: The quadrant reconstructed and scored.
TEST_QUADRANT = "c"
#: The held-out quadrant the agglomeration's threshold is chosen on (no network trains on it).
CHOICE_QUADRANT = "d"


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

    def affinities_predicted(self, q):
        """NN-6's affinities of quadrant ``q``: a (z, y, x, 3) uint8 stack."""
        return self.work / f"affinities_predicted_{q}.tif"

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
        """The agglomeration of c (a .zarr store with --chunks: it runs blockwise)."""
        return self._stack(f"{self.run}_agglomerate")

    @property
    def agglomerated_scores(self):
        return self.run_dir / "scores_agglomerate.json"

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

    def rerooted(self, run_dir):
        """This layout for its run folder found at ``run_dir`` (a copied or moved run): the
        paths inside the recorded run folder move there (the derived files too, where they
        lie under it), those outside it (the data, the usual derived files) stay."""
        new = Path(run_dir).absolute()

        def move(path):
            try:
                return new / Path(path).relative_to(self.run_dir)
            except ValueError:
                return Path(path)

        return Layout(move(self.data), move(self.work), new, self.run, self.zarr)


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
             "--n_res_blocks", "6", "--augment", "elastic,intensity,blur",
             # bfloat16 where the CPU has its instructions and the crops are large: 1.42x the
             # steps in fibsem-medulla's 3 minutes, d's F1 0.753 against 0.746
             # (documentation/trainer.md, real_em.md)
             "--mixed_precision", "auto"),
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
#: the networks that do (the agglomerating reconstruction predicts d's membranes, so every
#: network on them has d's pairs).  NN-4 too: trained alone to the end of its budget it once
#: ended diverging in bfloat16 (its loss 0.09 -> 0.78 in its last 250 steps) and predicted c
#: cytoplasm everywhere, one object (documentation/real_em.md).
VALIDATED_RECIPES = ("real", "real_calibrated")
VALIDATED_NETWORKS = ("nn3", "nn4", "nn5")


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


#: NN-6's crop (z, y, x) at most; smaller quadrants get their size (multiples of 4).
AFFINITY_CROP = (32, 64, 64)


def affinity_args(options, shape):
    """NN-6's training options for a volume of ``shape``: crop, budget (2 x --minutes, as it
    replaces NN-3 and NN-5, and/or --steps; else NN-3's :data:`QUICK_STEPS`), seed."""
    quadrant = (shape[0], shape[1] // 2, shape[2] // 2)
    crop = [min(c, s) // 4 * 4 for c, s in zip(AFFINITY_CROP, quadrant)]
    if min(crop) < 4:
        raise ValueError(f"quadrants of {' x '.join(map(str, quadrant))} are too small for NN-6 "
                         "(--method affinities needs at least 4 slices and 8 x 8 pixels)")
    length = []
    if options.steps is not None:
        length = ["--max_steps", str(options.steps)]
    if options.minutes is not None:
        length += ["--minutes", f"{2 * options.minutes:g}"]
    if not length:
        length = ["--max_steps", str(QUICK_STEPS["nn3"])]
    extra = ["--deterministic"] if options.deterministic else []
    return ["--crop", *map(str, crop), *length, "--seed", str(options.seed), *extra]


def recipe_summary(options, shape):
    kind = options.recipe
    if options.method == "affinities":
        args = affinity_args(options, shape)
        limits = [f"{flag} {args[i + 1]}" for i, flag in enumerate(args)
                  if flag in ("--max_steps", "--minutes")]
        return f"NN-6 3D U-Net ({', '.join(limits)})"
    first, other = (training_args(options, shape, key) for key in ("nn3", "nn4"))
    limits = [f"{flag} {first[i + 1]}" + (f" / {other[i + 1]}" if other[i + 1] != first[i + 1]
                                          else "")
              for i, flag in enumerate(first)
              if flag in ("--max_steps", "--max_epochs", "--max_minutes")]
    return f"{kind} training ({', '.join(limits)})"


def options_record(options, layout):
    """The options a run's numbers came from, and its layout (for report.json and figures)."""
    record = asdict(options)
    del record["force"], record["dry_run"]
    record["shape"] = list(options.shape) if options.shape else None
    return {"options": record, "layout": layout.as_dict()}

