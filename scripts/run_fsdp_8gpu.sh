#!/usr/bin/env bash
# Eight GPUs, FSDP (FSDP2 by default; FSDP_VERSION=1 for FSDP1 with use_orig_params): multilingual
# translation 2-to-2 with mBART-large, global batch 16 (2 per GPU), bf16.
set -euo pipefail
exec "$(dirname "$0")/_launch.sh" "fsdp${FSDP_VERSION:-2}_8gpu.yaml" "${TASK:-translation-2to2}" \
    "${METHOD:-gmp}" "${SPARSITY:-0.5}" --bf16 True --per_device_train_batch_size 2 \
    --average_tokens_across_devices False "$@"
