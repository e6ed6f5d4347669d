#!/usr/bin/env bash
# The arithmetic dense bar (issue 12 part 1): GTS on the MiniLM encoder, the paper's recipe (50 epochs, batch 4,
# encoder lr 8e-6, decoder 1e-3, StepLR halving every 20 epochs, beam 5, evaluation every epoch), per fold.
#
#   scripts/arithmetic_dense.sh                    # run (or resume) MAWPS then ASDiv-A, folds 0-4
#   TASKS=mawps FOLDS="0" scripts/arithmetic_dense.sh
#   scripts/arithmetic_dense.sh report             # learning curves and per-fold table into results/arithmetic-dense/
#
# Run folders: $DENSE_RUNS (default runs/arithmetic-dense, ignored by git). A killed run resumes from its last
# epoch checkpoint on the next call; a finished fold (all_results.json) is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUNS=${DENSE_RUNS:-runs/arithmetic-dense}
TASKS=${TASKS:-"mawps asdiv-a"}
FOLDS=${FOLDS:-"0 1 2 3 4"}
EPOCHS=${EPOCHS:-50}

if [[ ${1:-} == report ]]; then
  exec "$PY" scripts/arithmetic_dense_report.py "$RUNS" results/arithmetic-dense
fi

for task in $TASKS; do
  for fold in $FOLDS; do
    out="$RUNS/$task/fold-$fold"
    [[ -f $out/all_results.json ]] && continue
    mkdir -p "$out"
    echo "arithmetic_dense: $task fold $fold -> $out ($(date -u +%FT%TZ))"
    # Wall time over attempts: each attempt's start and its last heartbeat (a kill leaves the heartbeat behind).
    [[ -f $out/heartbeat ]] && echo "$(cat "$out/attempt_start") $(cat "$out/heartbeat")" >> "$out/attempts.tsv"
    date +%s | tee "$out/attempt_start" > "$out/heartbeat"
    (while sleep 30; do date +%s > "$out/heartbeat"; done) & beat=$!
    "$PY" run_glue_like.py --task "$task" --fold "$fold" --model_name_or_path minilm --num_train_epochs "$EPOCHS" \
      --output_dir "$out" --resume_from_checkpoint True --save_total_limit 2 --report_to none --disable_tqdm True \
      --logging_steps 50 >> "$out/train.log" 2>&1 || { kill $beat; exit 1; }
    kill $beat
    echo "$(cat "$out/attempt_start") $(date +%s)" >> "$out/attempts.tsv" && rm "$out/heartbeat"
  done
done
