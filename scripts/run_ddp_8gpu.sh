#!/usr/bin/env bash
# Eight GPUs, DDP: WinoGrande with RoBERTa-large, global batch 32 (4 per GPU), bf16.
# The loss is averaged per process and then over processes (--average_tokens_across_devices False): the
# multiple-choice heads ignore the Trainer's token count, which would otherwise scale the loss by 8.
set -euo pipefail
exec "$(dirname "$0")/_launch.sh" ddp_8gpu.yaml "${TASK:-winogrande}" "${METHOD:-gmp}" "${SPARSITY:-0.5}" \
    --bf16 True --per_device_train_batch_size 4 --average_tokens_across_devices False "$@"
