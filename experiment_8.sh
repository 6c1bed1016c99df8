#!/usr/bin/env bash
# experiment_8.sh: the thesis' automated run, end to end.
#
#   bash experiment_8.sh            SNEMI3D in datasets/, the thesis' networks and 2000 epochs
#   bash experiment_8.sh --demo     synthetic data and laptop-sized networks (~10 min on 2 cores),
#                                   deterministic (the same numbers on any x86-64 machine;
#                                   --no_deterministic for this machine's fastest kernels)
#   bash experiment_8.sh --help     every option
#   bash experiment_8.sh --dry_run  every step's command line, and whether it would run
#
# The recipe, in the thesis' order (each step is one of the project's own commands):
#   1. process3D.py split the EM and label volumes into quadrants a, b, c, d; membrane,
#      cytoplasm and overlap images of a, b, c; c's evaluation volume
#   2. NN-3 (EM -> membrane) trained on a; membranes predicted on b and c
#   3. NN-4 (membrane -> cytoplasm) and NN-5 (two consecutive membranes -> overlap) trained on
#      b's *predicted* membranes; cytoplasm and overlap predicted on c
#   4. predicted overlaps thinned (eroskele); c reconstructed (reconstruct3D.py)
#   5. scored against c's evaluation volume (evaluate3D.py); results/<run>/report.json
#   --paths all also trains NN-1 (EM -> cytoplasm) and NN-2 (EM pair -> overlap) on a.
#
# The options, file names and training recipes are data in neuron3d/recipe.py, the steps and
# their commands in neuron3d/plan.py (one place, also used by the report and the figures); the
# runner is neuron3d/experiment.py. A re-run skips a step only if the same command on the same
# inputs produced its outputs: changed options re-run exactly the steps they affect, and an
# interrupted run resumes (training from its last checkpoint). Two runs may not share a folder
# of derived files (--work): the second is refused, naming the first.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export PYTHONPATH="$HERE${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" -m neuron3d.experiment "$@"
