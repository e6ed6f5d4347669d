#!/usr/bin/env bash
# Eight GPUs, DeepSpeed ZeRO-2: RACE with RoBERTa-large, global batch 16 (1 per GPU x 2 accumulation steps),
# bf16. RigL reads dense gradients before the optimizer step, which DeepSpeed does not leave: use DDP or FSDP.
set -euo pipefail
exec "$(dirname "$0")/_launch.sh" deepspeed_zero2_8gpu.yaml "${TASK:-race}" "${METHOD:-gmp}" "${SPARSITY:-0.5}" \
    --bf16 True --per_device_train_batch_size 1 --gradient_accumulation_steps 2 \
    --average_tokens_across_devices False "$@"
