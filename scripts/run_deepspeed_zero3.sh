#!/usr/bin/env bash
# Eight GPUs, DeepSpeed ZeRO-3 (weights partitioned too): translation 5-to-5 with mBART-large, global batch 16
# (2 per GPU), bf16. The model is saved whole (stage3_gather_16bit_weights_on_model_save), zeros included.
set -euo pipefail
exec "$(dirname "$0")/_launch.sh" deepspeed_zero3_8gpu.yaml "${TASK:-translation-5to5}" "${METHOD:-gmp}" \
    "${SPARSITY:-0.5}" --bf16 True --per_device_train_batch_size 2 --average_tokens_across_devices False "$@"
