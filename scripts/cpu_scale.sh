#!/usr/bin/env bash
# SMC-Bench at CPU scale: dense + the paper's nine methods at 4 sparsities on MAWPS (GTS + MiniLM, fold 0),
# ThermoProt (AntiBERTy, three seeds: the cheapest task) and CSQA (MiniLM, multiple choice), one seed elsewhere,
# one run after another on one core.
#
#   scripts/cpu_scale.sh                 # run (or resume) every task; finished cells are skipped
#   scripts/cpu_scale.sh --dry-run       # the fine-tunings left and their estimated time (measured step costs)
#   scripts/cpu_scale.sh report          # tables, figures, per-module sparsity from the run folders into results/cpu-scale/
#   TASKS="mawps" scripts/cpu_scale.sh   # a subset, in this order
#   JOBS=2 scripts/cpu_scale.sh          # two runs at once, one core each (nothing else may use the cores)
#
# Run folders: $CPU_SCALE_RUNS (default runs/cpu-scale, ignored by git); each cell's result.json stays there, its
# checkpoints are deleted once it and every run that starts from it are done (--delete-run-dirs). `report` copies
# every finished cell's result.json into results/cpu-scale/cells/ (committed) and tabulates from there; a run or
# --dry-run first copies those back into the run folders, so a sweep resumes on a new machine from a clone.
# Why these sizes: see results/cpu-scale/README.md (estimated ~22 CPU-hours on one core, three ThermoProt seeds included).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${CPU_SCALE_RUNS:-runs/cpu-scale}
OUT=results/cpu-scale
TASKS=${TASKS:-"thermoprot mawps csqa"}
JOBS=${JOBS:-1}
METHODS=omp_after,random_after,lth,obert,gmp,omp_before,random_before,snip,rigl:snip
SPARSITIES=0.2,0.488,0.672,0.866
COMMON=(--report_to none --disable_tqdm True --logging_steps 50 --save_total_limit 2)

# Per task: model, smc-bench options, run arguments, measured seconds per optimizer step and steps per run
# (for --dry-run). --sparsity_update_every: the release's 1000 (arithmetic) / 500 steps are longer than these
# runs; the values keep roughly the release's number of GMP/RigL mask updates per run.
task_model() { case $1 in mawps) echo minilm;; csqa) echo minilm;; thermoprot) echo antiberty;; esac; }
task_bench() { case $1 in mawps) echo "--folds 0";; *) echo "";; esac; }
task_args() {
  case $1 in
    mawps) echo "--num_train_epochs 2 --sparsity_update_every 40";;
    thermoprot) echo "--data_dir data/protein/thermoprot --classifier_head cls --max_train_samples 600 \
--max_seq_length 128 --num_train_epochs 1 --per_device_train_batch_size 8 --learning_rate 3e-5 \
--sparsity_update_every 12";;
    csqa) echo "--data_dir data/commonsense/csqa --max_train_samples 1500 --max_eval_samples 500 --max_seq_length 64 \
--num_train_epochs 1 --learning_rate 5e-5 --warmup_steps 0.1 --sparsity_update_every 16";;
  esac
}
task_seeds() {  # pass 1: seed 1 on every task; pass 2: seeds 2 and 3 on ThermoProt, the cheapest task
  if [[ $2 == 1 ]]; then echo 1; elif [[ $1 == thermoprot ]]; then echo 2,3; fi
}
task_cost() {  # seconds per step, steps per run (measured: results/cpu-scale/README.md)
  case $1 in mawps) echo "0.74 770";; thermoprot) echo "3.9 75";; csqa) echo "5.2 94";; esac
}

CELLS=$OUT/cells
if [[ ${1:-} == report ]]; then
  mkdir -p "$OUT"
  # The run folders hold this machine's newest results (a redone cell replaces its archived file).
  [[ -d $RUNS ]] && { "$PY" -m smc_hf.cli.bench copy-results "$RUNS" "$CELLS" --overwrite || true; }
  "$PY" -m smc_hf.cli.bench report "$CELLS" --out "$OUT"
  "$PY" scripts/cpu_scale_times.py "$CELLS" "$OUT/wall_times.csv"
  exit 0
fi

mkdir -p "$RUNS"
# Cells finished on another machine (committed under results/cpu-scale/cells) are not run again.
[[ -d $CELLS ]] && { "$PY" -m smc_hf.cli.bench copy-results "$CELLS" "$RUNS" || true; }
for pass in 1 2; do
  for task in $TASKS; do
    seeds=$(task_seeds "$task" "$pass")
    [[ -z $seeds ]] && continue
    read -r step_s steps <<<"$(task_cost "$task")"
    extra=()
    [[ ${1:-} == --dry-run ]] && extra=(--dry-run --step-seconds "$step_s" --steps-per-run "$steps")
    # shellcheck disable=SC2046
    "$PY" -m smc_hf.cli.bench run --tasks "$task" --methods "$METHODS" --sparsities "$SPARSITIES" --seeds "$seeds" \
      --model "$(task_model "$task")" $(task_bench "$task") --output "$RUNS" --delete-run-dirs --jobs "$JOBS" \
      "${extra[@]}" --task-args "$task=$(task_args "$task")" -- "${COMMON[@]}" || status=$?
    [[ ${status:-0} -ne 0 ]] && echo "cpu_scale: $task ended with status $status (failed cells are retried on the next run)" >&2
    status=0
  done
done
