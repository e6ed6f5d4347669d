#!/usr/bin/env bash
# Shared by the run_*.sh scripts: accelerate launch CONFIG run_glue_like.py for TASK, METHOD, SPARSITY.
#   _launch.sh CONFIG TASK METHOD SPARSITY [run_glue_like.py arguments...] [-- accelerate launch arguments...]
# Environment: OUTPUT_DIR (default runs/TASK-METHOD-SPARSITY-seedSEED), SEED (1), MODEL (the task's paper
# checkpoint), PYTHON (python). Reruns resume from the newest checkpoint in OUTPUT_DIR, so a preempted job is
# restarted with the same command.
set -euo pipefail
if [ $# -lt 4 ]; then
    echo "usage: $0 CONFIG TASK METHOD SPARSITY [run_glue_like.py args] [-- accelerate launch args]" >&2
    exit 2
fi
CONFIG=$1 TASK=$2 METHOD=$3 SPARSITY=$4
shift 4
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG_FILE=$ROOT/scripts/accelerate/$CONFIG
[ -f "$CONFIG_FILE" ] || { echo "no accelerate config $CONFIG_FILE" >&2; exit 2; }
SEED=${SEED:-1}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/$TASK-$METHOD-$SPARSITY-seed$SEED}

SCRIPT_ARGS=() LAUNCH_ARGS=()
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then shift; LAUNCH_ARGS=("$@"); break; fi
    SCRIPT_ARGS+=("$1"); shift
done
if [ -n "${MODEL:-}" ]; then SCRIPT_ARGS+=(--model_name_or_path "$MODEL"); fi

cd "$ROOT"  # the DeepSpeed configs name their JSON files relative to the repository root
exec "${PYTHON:-python}" -m accelerate.commands.launch --config_file "$CONFIG_FILE" "${LAUNCH_ARGS[@]}" \
    run_glue_like.py --task "$TASK" --sparsity_method "$METHOD" --sparsity "$SPARSITY" --seed "$SEED" \
    --output_dir "$OUTPUT_DIR" --resume_from_checkpoint True --save_strategy steps --save_steps 500 \
    --save_total_limit 2 --report_to none "${SCRIPT_ARGS[@]}"
