#!/usr/bin/env bash
# One GPU: CommonsenseQA with RoBERTa-large at the paper's batch of 16, bf16.
#   METHOD=lth SPARSITY=0.59 scripts/run_single_gpu.sh [run_glue_like.py args]
set -euo pipefail
exec "$(dirname "$0")/_launch.sh" single_gpu.yaml "${TASK:-csqa}" "${METHOD:-gmp}" "${SPARSITY:-0.5}" \
    --bf16 True --per_device_train_batch_size 16 "$@"
