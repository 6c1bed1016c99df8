#!/usr/bin/env bash
# experiment_8.sh: the thesis' automated run (GUIDE §1), end to end.
#
#   bash experiment_8.sh            SNEMI3D in datasets/, the thesis' networks and 2000 epochs
#   bash experiment_8.sh --demo     synthetic data and laptop-sized networks (< 15 min on 2 cores)
#
# Quadrants a, b, c of datasets/train-{input,labels}.tif: NN-3 (EM -> membrane) trained on a,
# membranes predicted on b and c, NN-4 (membrane -> cytoplasm) and NN-5 (two consecutive
# membranes -> overlap) trained on b's *predicted* membranes, cytoplasm and overlap predicted
# on c, overlaps thinned (eroskele), c reconstructed and scored against its evaluation volume.
# --paths all also trains NN-1 (EM -> cytoplasm) and NN-2 (two EM slices -> overlap) on a and
# scores all four cytoplasm x overlap combinations.
#
# A re-run skips finished steps (an interrupted run resumes); --force re-runs them.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: bash experiment_8.sh [options]
  --demo            generate the project's synthetic data set and run with --quick
  --quick           small networks, crops and step counts (sized for a laptop CPU)
  --datasets DIR    data folder (default datasets/, or datasets/demo with --demo)
  --results DIR     results folder (default results/)
  --run NAME        run name: results/NAME/, datasets/NAME.tif (default experiment_8, demo: demo)
  --epochs N        training epochs for every network (thesis: 2000)
  --steps N         training steps for every network (overrides --epochs)
  --paths P         thesis (NN-3 -> NN-4 / NN-5, default) or all (also NN-1, NN-2)
  --erosions N      erosions before skeletonizing predicted overlaps (default 10)
  --shape Z Y X     synthetic volume for --demo (default 32 384 384)
  --seed N          random seed (default 0)
  --force           re-run steps whose outputs exist
EOF
}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python}"
DEMO=0 QUICK=0 FORCE=0 DATASETS="" RESULTS="results" RUN="" EPOCHS="" STEPS="" PATHS="thesis"
EROSIONS=10 SHAPE=(32 384 384) SEED=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --demo) DEMO=1; QUICK=1 ;;
        --quick) QUICK=1 ;;
        --force) FORCE=1 ;;
        --datasets) DATASETS="$2"; shift ;;
        --results) RESULTS="$2"; shift ;;
        --run) RUN="$2"; shift ;;
        --epochs) EPOCHS="$2"; shift ;;
        --steps) STEPS="$2"; shift ;;
        --paths) PATHS="$2"; shift ;;
        --erosions) EROSIONS="$2"; shift ;;
        --shape) SHAPE=("$2" "$3" "$4"); shift 3 ;;
        --seed) SEED="$2"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "experiment_8.sh: error: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ "$PATHS" == thesis || "$PATHS" == all ]] \
    || { echo "experiment_8.sh: error: --paths must be thesis or all, got $PATHS" >&2; exit 2; }
for n in "$EROSIONS" "$SEED" ${EPOCHS:+"$EPOCHS"} ${STEPS:+"$STEPS"}; do
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "experiment_8.sh: error: expected a number, got $n" >&2; exit 2; }
done
if [[ $DEMO == 1 ]]; then
    DATASETS="${DATASETS:-datasets/demo}"; RUN="${RUN:-demo}"
fi
D="${DATASETS:-datasets}"; D="${D%/}"; RUN="${RUN:-experiment_8}"; R="${RESULTS%/}/$RUN"
mkdir -p "$R/logs" "$R/.steps"
TIMINGS="$R/timings.tsv"
[[ $FORCE == 1 ]] && rm -f "$R"/.steps/*.done "$TIMINGS"
touch "$TIMINGS"
T0=$SECONDS

# step NAME COMMAND...: run once (skipped when done before), log, time; stop the run on failure.
step() {
    local name="$1"; shift
    local log="$R/logs/$name.log"
    if [[ -e "$R/.steps/$name.done" ]]; then
        echo "== $name: done before, skipped (--force re-runs)"
        return 0
    fi
    echo "== $name"
    local start=$SECONDS
    if ! "$@" >"$log" 2>&1; then
        echo "experiment_8.sh: step '$name' failed; its log: $log" >&2
        tail -n 5 "$log" | sed 's/^/    /' >&2
        exit 1
    fi
    printf '%s\t%s\n' "$name" "$((SECONDS - start))" >>"$TIMINGS"
    touch "$R/.steps/$name.done"
}

p3d() { "$PY" "$HERE/process3D.py" "$@"; }
combine() { "$PY" "$HERE/imagetranslation/tools/process.py" --operation combine \
    --input_dir "$1" --b_dir "$2" --output_dir "$3"; }
translate() { "$PY" "$HERE/imagetranslation/translate.py" "$@"; }

# ---- data -------------------------------------------------------------------------------
if [[ $DEMO == 1 ]]; then
    step synthetic p3d --operation synthetic --output_dir "$D" --shape "${SHAPE[@]}" --seed "$SEED"
fi
for f in train-input.tif train-labels.tif; do
    if [[ ! -f "$D/$f" ]]; then
        cat >&2 <<EOF
experiment_8.sh: error: $D/$f not found.
  Download SNEMI3D's train-input.tif and train-labels.tif (http://brainiac2.mit.edu/SNEMI3D/)
  into $D/, or run the synthetic demo: bash experiment_8.sh --demo
EOF
        exit 2
    fi
done

# Training configuration: the thesis' or a quick one sized to the quadrants.
read -r _Z H W < <("$PY" -c "import sys, tifffile; print(*tifffile.TiffFile(sys.argv[1]).series[0].shape[:3])" "$D/train-input.tif")
if [[ $QUICK == 1 ]]; then
    CROP=$(( (H / 2 < W / 2 ? H / 2 : W / 2) ))
    CROP=$(( (CROP < 128 ? CROP : 128) / 4 * 4 ))
    LEN=(--max_steps); NN3=1500; NN45=700
    TRAIN=(--Y_loss square --model pix2pix --generator resnet --ngf 16 --n_res_blocks 4
           --crop_size "$CROP" --scale_size "$CROP" --lr 0.001 --gan_weight 0
           --progress_freq 100 --summary_freq 20 --display_freq 500)
else
    LEN=(--max_epochs); NN3=2000; NN45=2000
    TRAIN=(--Y_loss square --model pix2pix --generator resnet --fliplr --flipud --transpose
           --display_freq 500 --gan_weight 0)
fi
if [[ -n "$STEPS" ]]; then LEN=(--max_steps); NN3=$STEPS; NN45=$STEPS;
elif [[ -n "$EPOCHS" ]]; then LEN=(--max_epochs); NN3=$EPOCHS; NN45=$EPOCHS; fi
echo "experiment_8.sh: data $D ($_Z x $H x $W), results $R, paths $PATHS, $([[ $QUICK == 1 ]] && echo quick || echo thesis) training (${LEN[0]} $NN3 / $NN45)"

train() {  # train NAME COMBINED LENGTH
    translate --mode train --input_dir "$2" --output_dir "$R/$1" --seed "$SEED" "${TRAIN[@]}" "${LEN[@]}" "$3"
}
predict() {  # predict CHECKPOINT COMBINED OUTPUT
    translate --mode test --checkpoint "$R/$1" --input_dir "$2" --output_dir "$R/$3" --model pix2pix
}

# train_and_predict KEY NET PRED PAIRS: train NET on combined/PAIRS_<q>, q being the quadrant
# NET's name ends with, then predict combined/PAIRS_c into PRED.
train_and_predict() {
    step "train_$1" train "$2" "$D/combined/$4_${2##*_}" "$NN45"
    step "predict_$1_c" predict "$2" "$D/combined/$4_c" "$3"
}
# cytoplasm_net KEY NET PRED PAIRS NAME: also gather the outputs as $D/NAME.tif; sets CYTO_KEY.
cytoplasm_net() {
    train_and_predict "$@"
    step "cytoplasm_predicted_$1_c" p3d --operation png_to_tif --input_dir "$R/$3/images/" \
        --output_dir "$D/" --name "$5"
    printf -v "CYTO_$1" '%s' "$D/$5.tif"
}
# overlap_net KEY NET PRED PAIRS NAME: also thin the outputs into $D/NAME; sets OVER_KEY.
overlap_net() {
    train_and_predict "$@"
    step "eroskele_$1_c" p3d --operation eroskele --input_dir "$R/$3/images/" \
        --output_dir "$D/$5" --erosions "$EROSIONS"
    printf -v "OVER_$1" '%s' "$D/$5"
}

step split_em p3d --operation split --input_dir "$D/train-input.tif" --output_dir "$D/" --split em
step split_label p3d --operation split --input_dir "$D/train-labels.tif" --output_dir "$D/" --split label
for q in a b c; do
    step "em_$q" p3d --operation tif_to_png --input_dir "$D/em_$q.tif" --output_dir "$D/em_$q"
    for op in membrane cytoplasm overlap; do
        step "${op}_$q" p3d --operation $op --input_dir "$D/label_$q.tif" --output_dir "$D/${op}_$q"
    done
    step "combine_em_membrane_$q" combine "$D/em_$q" "$D/membrane_$q" "$D/combined/em_membrane_$q"
done
if [[ -f "$D/evaluate_c.tif" && ! -e "$R/.steps/evaluation_c.done" ]]; then
    echo "== evaluation_c: using the existing $D/evaluate_c.tif"
else
    step evaluation_c p3d --operation evaluation --input_dir "$D/label_c.tif" --output_dir "$D/" --name evaluate_c
fi

# ---- NN-3: EM -> membrane, trained on a, predicted on b and c ------------------------------
step train_nn3 train T3_em_membrane_a "$D/combined/em_membrane_a" "$NN3"
for q in b c; do
    step "predict_nn3_$q" predict T3_em_membrane_a "$D/combined/em_membrane_$q" "P3_em_membrane_$q"
    step "membrane_predicted_$q" p3d --operation png_to_tif --input_dir "$R/P3_em_membrane_$q/images/" \
        --output_dir "$D/" --name "membrane_predicted_$q"
    step "membrane_predicted_png_$q" p3d --operation tif_to_png \
        --input_dir "$D/membrane_predicted_$q.tif" --output_dir "$D/membrane_predicted_$q"
    step "membrane_predicted_cons_$q" p3d --operation consecutive \
        --input_dir "$D/membrane_predicted_$q.tif" --output_dir "$D/membrane_predicted_cons_$q"
    step "combine_membrane_cytoplasm_$q" combine "$D/membrane_predicted_$q" "$D/cytoplasm_$q" \
        "$D/combined/membrane_cytoplasm_$q"
    step "combine_membrane_overlap_$q" combine "$D/membrane_predicted_cons_$q" "$D/overlap_$q" \
        "$D/combined/membrane_overlap_$q"
done

# ---- NN-4 and NN-5 on b's predicted membranes, predicted on c ----------------------------
cytoplasm_net nn4 T4_membrane_cytoplasm_b P4_membrane_cytoplasm_c membrane_cytoplasm cytoplasm_predicted_c
overlap_net nn5 T5_membrane_overlap_b P5_membrane_overlap_c membrane_overlap overlap_predicted_c_eroskele

# ---- NN-1 and NN-2 (--paths all) --------------------------------------------------------
COMBOS=("nn4 nn5")
if [[ $PATHS == all ]]; then
    for q in a c; do
        step "em_cons_$q" p3d --operation consecutive --input_dir "$D/em_$q.tif" --output_dir "$D/em_cons_$q"
        step "combine_em_cytoplasm_$q" combine "$D/em_$q" "$D/cytoplasm_$q" "$D/combined/em_cytoplasm_$q"
        step "combine_em_overlap_$q" combine "$D/em_cons_$q" "$D/overlap_$q" "$D/combined/em_overlap_$q"
    done
    cytoplasm_net nn1 T1_em_cytoplasm_a P1_em_cytoplasm_c em_cytoplasm cytoplasm_predicted_nn1_c
    overlap_net nn2 T2_em_overlap_a P2_em_overlap_c em_overlap overlap_predicted_nn2_c_eroskele
    COMBOS+=("nn1 nn2" "nn1 nn5" "nn4 nn2")
fi

# ---- reconstruct and score each combination ---------------------------------------------
for combo in "${COMBOS[@]}"; do
    read -r c o <<<"$combo"
    cyto_var="CYTO_$c"; over_var="OVER_$o"
    name="$RUN"; [[ "$combo" != "nn4 nn5" ]] && name="${RUN}_${c}_${o}"
    step "reconstruct_${c}_${o}" "$PY" "$HERE/reconstruct3D.py" --input_dir_cytoplasm "${!cyto_var}" \
        --input_dir_overlap "${!over_var}" --output_dir "$D/" --name "$name"
    step "evaluate_${c}_${o}" "$PY" "$HERE/evaluate3D.py" --predicted "$D/$name.tif" \
        --true "$D/evaluate_c.tif" --output "$R/scores_${c}_${o}.json"
done

# ---- report -----------------------------------------------------------------------------
"$PY" -m neuron3d.report --run_dir "$R" --datasets "$D" --run "$RUN" --total_seconds $((SECONDS - T0)) \
    --options "paths=$PATHS quick=$QUICK demo=$DEMO erosions=$EROSIONS seed=$SEED length=${LEN[0]}:$NN3/$NN45 train=${TRAIN[*]}"
echo
cat "$R/logs/evaluate_nn4_nn5.log"
echo
echo "experiment_8.sh: finished in $((SECONDS - T0)) s; report: $R/report.json"
