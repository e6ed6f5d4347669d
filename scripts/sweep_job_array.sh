#!/usr/bin/env bash
#SBATCH --job-name=smc-sweep
#SBATCH --nodes=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=logs/smc-sweep-%A_%a.out
# A sweep over tasks x methods x sparsities x seeds as a job array: one array task per cell, one GPU each.
#
#   scripts/sweep_job_array.sh plan                        # writes $SWEEP_DIR/cells.txt, prints the sbatch line
#   mkdir -p logs && sbatch ...                          # the one or two sbatch lines `plan` prints (stage 2
#                                                          # cells start from stage 1's dense runs)
#   scripts/sweep_job_array.sh 7                           # cell 7 by hand (or under PBS/LSF: their index)
#   smc-bench report $SWEEP_DIR/results                     # tables and figures once cells are done
#
# The cells come from `smc-bench run --print-commands`, which lists only cells without a result, so `plan`
# after a partial run re-plans what is left; each cell resumes from its own newest checkpoint when rerun.
# Environment: SWEEP_DIR (sweeps/default), TASKS (csqa), METHODS (the SMC-Bench methods), SPARSITIES (paper),
# SEEDS (1), MODEL (each task's paper checkpoint), ACCELERATE_ARGS (e.g. "--config_file
# scripts/accelerate/ddp_8gpu.yaml" for multi-GPU cells), EXTRA (run_glue_like.py arguments for every cell).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${SLURM_SUBMIT_DIR:-}" ] && [ -f "$SLURM_SUBMIT_DIR/scripts/sweep_job_array.sh" ]; then
    ROOT=$SLURM_SUBMIT_DIR  # sbatch runs a copy of this file from a spool directory
fi
SWEEP_DIR=${SWEEP_DIR:-$ROOT/sweeps/default}
CELLS=$SWEEP_DIR/cells.txt
PYTHON=${PYTHON:-python}

if [ "${1:-}" = "plan" ]; then
    mkdir -p "$SWEEP_DIR"
    args=(run --tasks "${TASKS:-csqa}"
          --methods "${METHODS:-omp_before,omp_after,random_before,random_after,gmp,lth,snip,rigl:snip,obert}"
          --sparsities "${SPARSITIES:-paper}" --seeds "${SEEDS:-1}" --output "$SWEEP_DIR/results"
          --print-commands)
    if [ -n "${MODEL:-}" ]; then args+=(--model "$MODEL"); fi
    if [ -n "${ACCELERATE_ARGS:-}" ]; then args+=(--accelerate --accelerate-args "$ACCELERATE_ARGS"); fi
    # shellcheck disable=SC2086  # EXTRA is a list of arguments
    (cd "$ROOT" && "$PYTHON" -m smc_hf.cli.bench "${args[@]}" -- --report_to none ${EXTRA:-}) > "$CELLS.plan"
    # Stage 2 runs start from stage 1's dense runs: the array is submitted in two parts, the second after the first.
    grep -v '^#' "$CELLS.plan" | grep . > "$CELLS" || true
    first=$(awk '/^# stage 2/ {exit} /^[^#]/ && NF {n++} END {print n+0}' "$CELLS.plan")
    count=$(grep -c . "$CELLS" || true)
    rm -f "$CELLS.plan"
    echo "$count cells in $CELLS ($first in stage 1)"
    if [ "$first" -gt 0 ]; then
        echo "submit: JOB=\$(sbatch --parsable --array=1-$first%16 $ROOT/scripts/sweep_job_array.sh)"
    fi
    if [ "$count" -gt "$first" ]; then
        dep=""; if [ "$first" -gt 0 ]; then dep="--dependency=afterok:\$JOB "; fi
        echo "submit: sbatch $dep--array=$((first + 1))-$count%16 $ROOT/scripts/sweep_job_array.sh"
    fi
    exit 0
fi

INDEX=${1:-${SLURM_ARRAY_TASK_ID:-${PBS_ARRAY_INDEX:-${LSB_JOBINDEX:-}}}}
if ! [[ "$INDEX" =~ ^[0-9]+$ ]] || [ "$INDEX" -lt 1 ]; then
    echo "usage: $0 plan | $0 CELL_NUMBER (or run as an array job)" >&2
    exit 2
fi
[ -f "$CELLS" ] || { echo "no $CELLS: run '$0 plan' first" >&2; exit 2; }
LINE=$(sed -n "${INDEX}p" "$CELLS")
[ -n "$LINE" ] || { echo "cell $INDEX not in $CELLS ($(grep -c . "$CELLS") cells)" >&2; exit 2; }
echo "cell $INDEX: $LINE"
cd "$ROOT"
# The line is `smc-bench run ...` quoted by shlex.join; run it through the module, so no console script is needed.
eval "$PYTHON -m smc_hf.cli.bench ${LINE#smc-bench }"
