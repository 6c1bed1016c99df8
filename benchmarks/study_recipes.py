"""Training recipes for NN-3 (EM -> membrane) compared at equal wall-time budgets.

    python -m benchmarks.study_recipes --data ../shared/data/gala-fibsem --minutes 2
    python -m benchmarks.study_recipes --data ../shared/data/gala-fibsem --minutes 5 \\
        --recipes quick wide_augment
    python -m benchmarks.study_recipes --data ../shared/data/fibsem-medulla --minutes 3 \\
        --recipes wide_augment_validated_balanced2_bf16 --views predict

Each recipe trains NN-3 on quadrant a (``--train ab``: a and b) of ``<data>/train-input.tif``
/ ``train-labels.tif`` for the same budget (``translate.py --max_minutes``), then predicts
quadrants d (where a recipe is *chosen*) and c (where the chosen one is *reported*), and
scores the membranes against the ground truth: pixel precision / recall / F1 at 0.5, and the
boundary F1 with 1 pixel of tolerance.  ``--views predict`` also scores the mean of each
quadrant's predictions sliced along z, y and x (``translate.py --mode test --views``),
``--views both`` trains on a's three views too.  Run it alone on the machine: the budget is
wall time, so anything else running steals steps from the recipe being timed.  Prints a
markdown table; ``--output`` writes JSON.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import ROOT

#: Common options of every recipe (as experiment_8.sh --quick trains).
BASE = ["--model", "pix2pix", "--gan_weight", "0", "--lr", "0.001", "--progress_freq", "0",
        "--summary_freq", "100", "--save_freq", "0"]
#: name -> translate.py options; {crop} is the quadrant's shorter side (at most 128, /4).
RECIPES = {
    "quick": ["--generator", "resnet", "--ngf", "16", "--n_res_blocks", "4", "--Y_loss",
              "square"],
    "quick_logistic": ["--generator", "resnet", "--ngf", "16", "--n_res_blocks", "4",
                       "--Y_loss", "logistic"],
    "quick_dice": ["--generator", "resnet", "--ngf", "16", "--n_res_blocks", "4",
                   "--Y_loss", "dice"],
    "wide": ["--generator", "resnet", "--ngf", "32", "--n_res_blocks", "6", "--Y_loss",
             "square"],
    "unet": ["--generator", "unet", "--ngf", "32", "--u_depth", "4", "--Y_loss", "square"],
    "quick_augment": ["--generator", "resnet", "--ngf", "16", "--n_res_blocks", "4",
                      "--Y_loss", "square", "--augment", "elastic,intensity,blur"],
    "quick_batch4": ["--generator", "resnet", "--ngf", "16", "--n_res_blocks", "4",
                     "--Y_loss", "square", "--batch_size", "4"],
    "wide_augment": ["--generator", "resnet", "--ngf", "32", "--n_res_blocks", "6",
                     "--Y_loss", "square", "--augment", "elastic,intensity,blur"],
    # the best on d at 2 minutes (wide_augment) with the loss that helped on d (dice)
    "wide_dice_augment": ["--generator", "resnet", "--ngf", "32", "--n_res_blocks", "6",
                          "--Y_loss", "dice", "--augment", "elastic,intensity,blur"],
    # wide_augment with the learning rate decayed to 0 over the budget (longer budgets
    # overfit the 50 training slices at a constant rate)
    "wide_augment_cosine": ["--generator", "resnet", "--ngf", "32", "--n_res_blocks", "6",
                            "--Y_loss", "square", "--augment", "elastic,intensity,blur",
                            "--lr_decay", "cosine"],
    "wide_augment_linear": ["--generator", "resnet", "--ngf", "32", "--n_res_blocks", "6",
                            "--Y_loss", "square", "--augment", "elastic,intensity,blur",
                            "--lr_decay", "linear"],
    # wide_augment validated on d every 250 steps, the best weights kept (early stopping by
    # checkpoint choice on the quadrant recipes are chosen on; c stays unseen)
    "wide_augment_validated": ["--generator", "resnet", "--ngf", "32", "--n_res_blocks", "6",
                               "--Y_loss", "square", "--augment", "elastic,intensity,blur",
                               "--validation_dir", "{d}"],
    "wide_augment_cosine_validated": ["--generator", "resnet", "--ngf", "32",
                                      "--n_res_blocks", "6", "--Y_loss", "square", "--augment",
                                      "elastic,intensity,blur", "--lr_decay", "cosine",
                                      "--validation_dir", "{d}"],
}

# wide_augment_validated with the membranes weighted (--pos_weight): its L2 output is a
# posterior mean, and d's F1 of the validated network peaked at a threshold of 0.35-0.4, not
# 0.5; weight W moves the output's 0.5 to a posterior of 1 / (1 + W): 0.385, 0.333
RECIPES["wide_augment_validated_balanced"] = [*RECIPES["wide_augment_validated"],
                                              "--pos_weight", "1.6"]
RECIPES["wide_augment_validated_balanced2"] = [*RECIPES["wide_augment_validated"],
                                               "--pos_weight", "2"]
# the chosen one (balanced2) with a moving average of its weights (--ema), validated and
# predicted with the average: the validated runs kept early, noisy weights (steps 4250-7250)
RECIPES["wide_augment_validated_balanced2_ema"] = [*RECIPES["wide_augment_validated_balanced2"],
                                                   "--ema", "0.999"]
# the chosen one in bfloat16 (faster where the CPU has AVX512_BF16 or AMX: trainer.md)
RECIPES["wide_augment_validated_balanced2_bf16"] = [*RECIPES["wide_augment_validated_balanced2"],
                                                    "--mixed_precision", "bf16"]
# ... validated and predicted with a moving average of its weights (fibsem-medulla's d kept
# early weights, step 3250 of 6000, at 5 minutes)
RECIPES["wide_augment_validated_balanced2_bf16_ema"] = [
    *RECIPES["wide_augment_validated_balanced2_bf16"], "--ema", "0.999"]
# ... with the segmentation U-Net (skips at every resolution) in place of the ResNet: 4 poolings,
# 32 -> 256 channels
_RESNET = ["--generator", "resnet", "--ngf", "32", "--n_res_blocks", "6"]
assert RECIPES["wide_augment_validated_balanced2_bf16"][:6] == _RESNET
RECIPES["segunet_augment_validated_balanced2_bf16"] = [
    "--generator", "segunet", "--ngf", "32", "--u_depth", "4",
    *RECIPES["wide_augment_validated_balanced2_bf16"][6:]]
# ... 1.5x as wide (ngf 48): on a CPU with AMX bfloat16 buys the steps a wider ResNet needs
RECIPES["wide48_augment_validated_balanced2_bf16"] = [
    "--generator", "resnet", "--ngf", "48", "--n_res_blocks", "6",
    *RECIPES["wide_augment_validated_balanced2_bf16"][6:]]
RECIPES["segunet16_augment_validated_balanced2_bf16"] = [
    "--generator", "segunet", "--ngf", "16", "--u_depth", "4",
    *RECIPES["wide_augment_validated_balanced2_bf16"][6:]]

# ... its learning rate falling to 0 over the budget (cosine): on fibsem-medulla's 125^3
# quadrants 3-5 minutes keep late weights (validation had not turned), so the budget ends
# before the network fits; a decay anneals where a constant rate keeps jumping
RECIPES["wide_augment_validated_balanced2_bf16_cosine"] = [
    *RECIPES["wide_augment_validated_balanced2_bf16"], "--lr_decay", "cosine"]
# ... from twice the rate (0.002, after BASE's 0.001: the last --lr counts)
RECIPES["wide_augment_validated_balanced2_bf16_cosine_lr2"] = [
    *RECIPES["wide_augment_validated_balanced2_bf16_cosine"], "--lr", "0.002"]
# ... four crops a step (bfloat16 on AMX: more images a second for a larger matrix)
RECIPES["wide_augment_validated_balanced2_bf16_batch4"] = [
    *RECIPES["wide_augment_validated_balanced2_bf16"], "--batch_size", "4"]


def run(*args):
    result = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True,
                            cwd=ROOT)
    if result.returncode:
        raise SystemExit(f"{' '.join(map(str, args[:3]))} failed: {result.stderr.strip()[-800:]}")
    return result


def prepare(data, work, context=0, views=False, train="a"):
    """Quadrants, membrane images and EM | membrane pairs of c, d and the training quadrants
    ``train`` ("a" or "ab"), whose pairs go to ``combined_train``; returns the crop size.
    With ``views``, a's pairs hold its three orthogonal views (each view's membranes drawn in
    its own plane), and c and d are also written as xz and yz slices for prediction."""
    import shutil

    import numpy as np
    import tifffile

    from neuron3d.io import write_slices, write_tif
    from neuron3d.labels import membrane, split_quadrants

    em = tifffile.imread(Path(data) / "train-input.tif")
    labels = tifffile.imread(Path(data) / "train-labels.tif")
    em_q, label_q = split_quadrants(em), split_quadrants(labels)
    if views and context:
        raise SystemExit("--views and --context are exclusive")
    if views == "both" and train != "a":
        raise SystemExit("--views both trains on a only")
    for q in sorted(set(train) | set("cd")):
        em_images = em_q[q]
        if views and (q in "cd" or views == "both"):  # c and d are predicted
            write_views(work, q, em_q[q], label_q[q], training=q == "a")
        if context:  # each slice between its neighbours: red z - K, green z, blue z + K
            z = np.arange(len(em_images))
            em_images = np.stack([em_images[np.maximum(z - context, 0)], em_images,
                                  em_images[np.minimum(z + context, len(z) - 1)]], axis=-1)
        write_tif(work / f"label_{q}.tif", label_q[q])
        if views == "both" and q == "a":
            continue
        write_slices(work / f"em_{q}", em_images)
        write_slices(work / f"membrane_{q}", membrane(label_q[q]))
        combine(work / f"em_{q}", work / f"membrane_{q}", work / f"combined_{q}")
    (work / "combined_train").mkdir()
    for q in train:  # one folder of the training quadrants' pairs, named apart
        for path in sorted((work / f"combined_{q}").iterdir()):
            shutil.copy(path, work / "combined_train" / f"{q}_{path.name}")
    return min(min(em_q["a"].shape if views == "both" else em_q["a"].shape[1:]), 128) // 4 * 4


def combine(em, target, out):
    run("imagetranslation/tools/process.py", "--operation", "combine", "--input_dir", em,
        "--b_dir", target, "--output_dir", out)


def write_views(work, q, em, labels, training):
    """Quadrant ``q``'s xz and yz slices (``em_<q>_<view>``, ``combined_<q>_<view>``); for the
    training quadrant also all three views' pairs in one folder, ``combined_<q>``."""
    import shutil

    import numpy as np

    from imagetranslation.inference import VIEWS
    from neuron3d.io import write_slices
    from neuron3d.labels import membrane

    for view, axes in VIEWS.items():
        if view == "xy" and not training:
            continue
        em_view = np.ascontiguousarray(np.transpose(em, axes))
        write_slices(work / f"em_{q}_{view}", em_view)
        write_slices(work / f"membrane_{q}_{view}", membrane(np.transpose(labels, axes)))
        combine(work / f"em_{q}_{view}", work / f"membrane_{q}_{view}",
                work / f"combined_{q}_{view}")
        if training:  # one folder of all views' pairs, named apart
            (work / f"combined_{q}").mkdir(exist_ok=True)
            for path in sorted((work / f"combined_{q}_{view}").iterdir()):
                shutil.copy(path, work / f"combined_{q}" / f"{view}_{path.name}")


def score(prediction, work, q):
    """Scores of a (z, y, x) uint8 prediction of quadrant ``q``."""
    from neuron3d.io import read_stack
    from neuron3d.report import prediction_quality

    quality = prediction_quality(prediction, read_stack(work / f"membrane_{q}", channel=0),
                                 membrane=True)
    return {"f1": quality["f1"], "precision": quality["precision"],
            "recall": quality["recall"], "boundary_f1_1px": quality["boundary_1px"]["f1"]}


def predict(net, work, q, tta, view=None):
    """The network's (z, y, x) uint8 prediction of quadrant ``q``, from its slices in ``view``
    (xz or yz: brought back to z, y, x), or from its xy slices."""
    import numpy as np

    from imagetranslation.inference import VIEWS
    from neuron3d.io import read_stack

    name = f"combined_{q}" if view is None else f"combined_{q}_{view}"
    out = work / f"P_{net.name}_{q}_{view or 'xy'}"
    run("imagetranslation/translate.py", "--mode", "test", "--checkpoint", net,
        "--input_dir", work / name, "--output_dir", out, *(["--tta"] if tta else []))
    stack = read_stack(out / "images", channel=0)
    return stack if view is None else np.ascontiguousarray(np.transpose(stack, VIEWS[view]))


def train_and_predict(work, name, crop, minutes, seed, tta, views=False, keep=None):
    """Train recipe ``name`` for ``minutes`` with ``seed``; predict d and c (with ``views``:
    the mean of the xy, xz and yz predictions; the xy one alone in ``<q>_xy_only``). Returns
    the row (steps, best step, scores) and the two predictions ((z, y, x) uint8).  With
    ``keep`` (a folder), each view's prediction is also written there as
    ``<recipe>_s<seed>_<q>_<view>.tif`` ((z, y, x) uint8), for analyses after the run."""
    import numpy as np

    from neuron3d.io import write_tif

    net = work / f"T_{name}_{seed}"
    from imagetranslation.models import stride_of

    options = RECIPES[name]
    network = {"generator": options[options.index("--generator") + 1]}
    if "--u_depth" in options:
        network["u_depth"] = int(options[options.index("--u_depth") + 1])
    crop -= crop % stride_of(network)  # crops: multiples of the generator's stride
    start = time.monotonic()
    run("imagetranslation/translate.py", "--mode", "train", "--input_dir",
        work / "combined_train", "--output_dir", net, "--crop_size", crop, "--scale_size",
        crop, "--max_minutes", minutes, "--seed", seed, *BASE,
        *[str(work / "combined_d") if o == "{d}" else o for o in options])
    seconds = time.monotonic() - start
    training = json.loads((net / "training.json").read_text())
    row = {"recipe": name, "options": RECIPES[name], "minutes": minutes, "seed": seed,
           "steps": training["steps_reached"], "train_seconds": round(seconds, 1)}
    if "validation" in training:
        row["best_step"] = training["validation"]["best_step"]
    predictions = {}
    for q in "dc":
        predictions[q] = predict(net, work, q, tta)
        row[q] = score(predictions[q], work, q)
        stacks = [predictions[q]]
        if views:  # the mean of the three views' predictions, scored in xy
            stacks += [predict(net, work, q, tta, v) for v in ("xz", "yz")]
            mean = np.mean([p.astype(np.float64) for p in stacks], axis=0)
            predictions[q] = np.floor(mean + 0.5).astype(np.uint8)
            row[f"{q}_xy_only"] = row[q]
            row[q] = score(predictions[q], work, q)
        if keep is not None:
            for view, stack in zip(("xy", "xz", "yz"), stacks):
                write_tif(Path(keep) / f"{name}_s{seed}_{q}_{view}.tif", stack)
    print(f"  {name} seed {seed}: {row['steps']} steps (best {row.get('best_step')}); d F1 "
          f"{row['d']['f1']:.3f}; c F1 {row['c']['f1']:.3f}", file=sys.stderr, flush=True)
    return row, predictions


def study(data, minutes, recipes, seed=0, tta=False, seeds=1, context=0, views=False,
          train="a", keep=None):
    """Each recipe for ``minutes``; with ``seeds`` > 1, ``seeds`` networks (seeds ``seed``,
    ``seed`` + 1, ...) of ``minutes / seeds`` each, scored alone and as an ensemble (the mean
    of their 8-bit predictions)."""
    import numpy as np

    rows = []
    with tempfile.TemporaryDirectory(prefix="recipes.") as tmp:
        work = Path(tmp)
        crop = prepare(data, work, context, views, train)
        for name in recipes:
            members = [train_and_predict(work, name, crop, minutes / seeds, seed + k, tta,
                                         views, keep) for k in range(seeds)]
            if seeds == 1:
                row = members[0][0]
            else:
                row = {"recipe": f"{name} x {seeds}", "options": RECIPES[name],
                       "minutes": minutes, "seeds": [r for r, _ in members],
                       "steps": "+".join(str(r["steps"]) for r, _ in members)}
                for q in "dc":
                    mean = np.mean([p[q].astype(np.float64) for _, p in members], axis=0)
                    row[q] = score(np.floor(mean + 0.5).astype(np.uint8), work, q)
            rows.append(row)
            print(f"{row['recipe']}: {row['steps']} steps (best {row.get('best_step')}); d F1 "
                  f"{row['d']['f1']:.3f} boundary "
                  f"{row['d']['boundary_f1_1px']:.3f}; c F1 {row['c']['f1']:.3f} boundary "
                  f"{row['c']['boundary_f1_1px']:.3f}", file=sys.stderr, flush=True)
    best = max(rows, key=lambda r: (r["d"]["f1"], r["d"]["boundary_f1_1px"]))
    return {"data": str(data), "minutes": minutes, "seed": seed, "seeds": seeds, "tta": tta,
            "context": context, "views": views, "train": train,
            "rows": rows, "chosen_on_d": best["recipe"]}


def table(result):
    lines = [f"NN-3 on quadrant(s) {result.get('train', 'a')} of {result['data']}, "
             f"{result['minutes']:g} min each"
             f"{' (TTA)' if result['tta'] else ''}; chosen on d: **{result['chosen_on_d']}**",
             "", "| recipe | steps | d: F1 | d: boundary F1 (1 px) | c: F1 "
             "| c: boundary F1 (1 px) |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['recipe']} | {r['steps']} | {r['d']['f1']:.3f} | "
                     f"{r['d']['boundary_f1_1px']:.3f} | {r['c']['f1']:.3f} | "
                     f"{r['c']['boundary_f1_1px']:.3f} |")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with train-input.tif, train-labels.tif")
    p.add_argument("--minutes", type=float, default=2.0, help="training budget per recipe")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tta", action="store_true", help="predict with test-time augmentation")
    p.add_argument("--seeds", type=int, default=1,
                   help="an ensemble: this many networks per recipe, --minutes shared between "
                        "them, scored as the mean of their predictions")
    p.add_argument("--context", type=int, nargs="?", const=1, default=0, metavar="K",
                   help="NN-3 sees each EM slice with the slices K away (red z - K, green z, "
                        "blue z + K; K 1 without a value) instead of the slice alone")
    p.add_argument("--views", choices=("both", "predict"),
                   help="NN-3 predicts d and c in their three orthogonal views (xy, xz, yz "
                        "slices), averaged (isotropic volumes); 'both': it also trains on a's "
                        "three views")
    p.add_argument("--train", choices=("a", "ab"), default="a",
                   help="the quadrants NN-3 trains on (default a; b is where the experiment "
                        "trains NN-4 and NN-5)")
    p.add_argument("--keep", metavar="DIR",
                   help="also write each network's predictions of d and c, one TIFF per view "
                        "(<recipe>_s<seed>_<q>_<view>.tif), to this folder")
    p.add_argument("--output", help="JSON file for the results")
    args = p.parse_args(argv)
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
    result = study(args.data, args.minutes, args.recipes, args.seed, args.tta, args.seeds,
                   args.context, args.views, args.train, args.keep)
    print(table(result))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
