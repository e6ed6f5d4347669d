#!/usr/bin/env bash
# Two machines x eight GPUs, DDP: translation 10-to-10 with mBART-large, global batch 16 (1 per GPU), bf16.
# Run the same command on every machine, with MASTER_ADDR (the first machine's address) and NODE_RANK
# (0 on the first machine, 1 on the second). Under SLURM, `srun --nodes 2 --ntasks-per-node 1` sets them
# from SLURM_NODEID and the first host of SLURM_JOB_NODELIST. OUTPUT_DIR must be on a shared file system.
set -euo pipefail
NODE_RANK=${NODE_RANK:-${SLURM_NODEID:-}}
if [ -z "${MASTER_ADDR:-}" ] && [ -n "${SLURM_JOB_NODELIST:-}" ]; then
    MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
fi
if [ -z "${MASTER_ADDR:-}" ] || [ -z "$NODE_RANK" ]; then
    echo "set MASTER_ADDR and NODE_RANK (or run under SLURM)" >&2
    exit 2
fi
exec "$(dirname "$0")/_launch.sh" multinode_2x8gpu.yaml "${TASK:-translation-10to10}" "${METHOD:-gmp}" \
    "${SPARSITY:-0.5}" --bf16 True --per_device_train_batch_size 1 --average_tokens_across_devices False "$@" \
    -- --machine_rank "$NODE_RANK" --main_process_ip "$MASTER_ADDR" --main_process_port "${MASTER_PORT:-29500}"
