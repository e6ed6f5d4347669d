#!/usr/bin/env bash
# results/oneshot/: one-shot pruning of a fine-tuned model, then recovery fine-tuning, per method, at 0.5 and 2:4.
#
#   scripts/oneshot_results.sh                    # runs what is missing, then writes results/oneshot/
#   RUNNER=tslot ONESHOT_RUNS=/work/oneshot-runs scripts/oneshot_results.sh
#
# CSQA (the repository's data/commonsense/csqa) with all-MiniLM-L6-v2 under a multiple-choice head (`minilm`, the
# `real` extra): one dense fine-tune on the first TRAIN questions (1 epoch, MAXLEN tokens), reused by every method;
# each method prunes it one-shot with smc-prune (calibration: CALIB training questions), is evaluated as pruned
# (one optimizer step at learning rate 0 through the same entry script: the weights do not change), then fine-tuned
# with its mask fixed (`--sparsity_method fixed`, the same recipe as the dense run) and evaluated again, on the
# first EVAL dev questions. Resumable: a step whose all_results.json (or pruned config.json) exists is skipped, so
# the same command continues a killed run. A method or pattern this smc_hf does not register is reported as not
# run. Also runs benchmarks/oneshot.py once with the same CALIB (the MiniLM layer-error / cosine table). Writes
# results/oneshot/{summary.md,summary.csv,commands.txt,versions.json}.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${ONESHOT_RUNS:-$ROOT/out/oneshot-runs}
PY=${PYTHON:-python}
RUNNER=${RUNNER:-}
TRAIN=${TRAIN:-1000}
EVAL=${EVAL:-300}
MAXLEN=${MAXLEN:-64}
CALIB=${CALIB:-128}
OUT=$ROOT/results/oneshot
DATA=$ROOT/data/commonsense/csqa
METHODS=${METHODS:-"magnitude wanda sparsegpt"}
SPARSITIES=${SPARSITIES:-"0.5 2:4"}

mkdir -p "$RUNS" "$OUT"
cd "$ROOT"
COMMANDS=$OUT/commands.txt
: > "$COMMANDS.partial"

# step DONE_FILE CMD...: record the command; run it unless DONE_FILE exists.
step() {
    local done_file=$1
    shift
    printf '%s\n' "$*" | sed "s|$RUNS|\$RUNS|g; s|$ROOT/||g" >> "$COMMANDS.partial"
    if [[ -f $done_file ]]; then
        echo "== done: ${done_file#"$RUNS"/}"
    else
        echo "== running: $*"
        $RUNNER "$PY" "$@"
    fi
}

COMMON=(--task csqa --data_dir "$DATA" --max_train_samples "$TRAIN" --max_eval_samples "$EVAL"
        --max_seq_length "$MAXLEN" --max_steps -1 --num_train_epochs 1 --learning_rate 1e-4 --warmup_steps 6
        --per_device_train_batch_size 16 --per_device_eval_batch_size 32 --save_strategy no --eval_strategy no
        --report_to none --use_cpu True --seed 0 --disable_tqdm True)

step "$RUNS/dense/all_results.json" run_glue_like.py "${COMMON[@]}" --model_name_or_path minilm \
    --sparsity_method dense --output_dir "$RUNS/dense"

has_method() { $RUNNER "$PY" -c "import sys; from smc_hf.methods import METHODS; sys.exit(0 if '$1' in METHODS else 1)" 2>/dev/null; }
has_pattern() { $RUNNER "$PY" -c "import dataclasses, sys; from smc_hf import SparsityConfig; sys.exit(0 if 'pattern' in {f.name for f in dataclasses.fields(SparsityConfig)} else 1)" 2>/dev/null; }

for method in $METHODS; do
    case $method in
        magnitude) name=omp; dist=(--distribution uniform); extra=() ;;
        *) name=$method; dist=(); extra=(--calibration-task csqa --calibration-file "$DATA/train_rand_split.jsonl"
                                --calibration-samples "$CALIB" --max-length "$MAXLEN") ;;
    esac
    if ! has_method "$name"; then echo "== not run: method $name is not registered"; continue; fi
    for sparsity in $SPARSITIES; do
        cell="$method-${sparsity/:/of}"
        if [[ $sparsity == *:* ]]; then
            if ! has_pattern; then echo "== not run: $cell (SparsityConfig has no pattern option)"; continue; fi
            target=(--sparsity 0.5 --pattern "$sparsity")
        else
            target=(--sparsity "$sparsity" "${dist[@]}")
        fi
        step "$RUNS/prune-$cell/config.json" -m smc_hf.cli.prune "$RUNS/dense" --method "$name" "${target[@]}" \
            "${extra[@]}" --output "$RUNS/prune-$cell" --progress false
        step "$RUNS/pruned-$cell/all_results.json" run_glue_like.py "${COMMON[@]}" \
            --model_name_or_path "$RUNS/prune-$cell" --sparsity_method fixed --max_steps 1 --learning_rate 0 --lr_scheduler_type constant \
            --warmup_steps 0 --output_dir "$RUNS/pruned-$cell"
        step "$RUNS/recover-$cell/all_results.json" run_glue_like.py "${COMMON[@]}" \
            --model_name_or_path "$RUNS/prune-$cell" --sparsity_method fixed --output_dir "$RUNS/recover-$cell"
    done
done
step "$RUNS/bench.json" benchmarks/oneshot.py --calibration "$CALIB" --json "$RUNS/bench.json"
mv "$COMMANDS.partial" "$COMMANDS"

$RUNNER "$PY" scripts/oneshot_summary.py "$RUNS" "$OUT" --methods "$METHODS" --sparsities "$SPARSITIES" --eval-questions "$EVAL" \
    --setting "CSQA, all-MiniLM-L6-v2 multiple choice: $TRAIN training questions, 1 epoch, $MAXLEN tokens, lr 1e-4, batch 16; $EVAL dev questions; calibration $CALIB training questions"
