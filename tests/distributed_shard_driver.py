"""Sharded-weight checks on the CPU over gloo, launched by `torch.distributed.run --nproc_per_node 2`.

Usage: distributed_shard_driver.py OUT_DIR MODE..., each MODE one of
- fsdp1 / fsdp2: a tiny RoBERTa wrapped by FSDP1 (use_orig_params) or FSDP2 (`fully_shard`) trains a few
  AdamW steps with GMP, driven through `SparsityCallback`'s Trainer events (Accelerate's FSDP plugin needs
  GPUs, the placements do not). Every rank feeds the same batch, so the sharded run must reach the masks of
  an unsharded reference run trained alongside.
- agree: masks that differ on one rank are detected, and repaired from rank 0 (masks and weights).
- upkeep: a fixed mask (omp_before) under DDP, FSDP2 and FSDP1, with AdamW (keeps zeros by itself) and with an
  optimizer that moves zero entries; counts how often weights and optimizer state are re-masked.
Each rank writes OUT_DIR/<mode>-rank-<i>.json with what it observed.
"""

from __future__ import annotations

import copy
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402
from transformers import TrainerControl, TrainerState, TrainingArguments  # noqa: E402

from smc_hf import MaskSet, SparsityCallback, SparsityConfig, sparsity_report  # noqa: E402
from smc_hf.integrations import distributed  # noqa: E402
from tests.helpers import ShiftingSGD, ToyClassification, tiny_roberta  # noqa: E402

STEPS = 6


def batch():
    data = ToyClassification(n=8)
    return {k: torch.stack([data[i][k] for i in range(8)]) for k in ("input_ids", "attention_mask", "labels")}


def adamw(params):
    return torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1)


def shifting_sgd(params):
    return ShiftingSGD(params, lr=1e-2, momentum=0.9)


def train(model, out_dir, steps=STEPS, method="gmp", optimizer=adamw, wrapped=None):
    """The Trainer's event order, without the Trainer: begin, then per step pre-step, step, post-step.
    `wrapped` (a DDP module) runs forward and backward; the callback sees `model`, as under the Trainer."""
    args = TrainingArguments(output_dir=out_dir, use_cpu=True, report_to=[], max_grad_norm=0.0)
    state, control = TrainerState(max_steps=steps), TrainerControl()
    optimizer = optimizer(model.parameters())
    schedule = {"update_every": 1} if method == "gmp" else {}
    callback = SparsityCallback(SparsityConfig(method=method, sparsity=0.5, **schedule))
    callback.on_train_begin(args, state, control, model=model, optimizer=optimizer)
    inputs = batch()
    for _ in range(steps):
        (wrapped or model)(**inputs).loss.backward()
        callback.on_pre_optimizer_step(args, state, control, model=model, optimizer=optimizer)
        optimizer.step()
        callback.on_optimizer_step(args, state, control, model=model, optimizer=optimizer)
        optimizer.zero_grad()
        state.global_step += 1
    return callback, optimizer


def local_part(tensor):
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


def shard(model, mode):
    """`model` sharded by FSDP2 (`fully_shard` per layer, then whole) or wrapped by FSDP1 (use_orig_params)."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

    if mode == "fsdp2":
        mesh = init_device_mesh("cpu", (PartialState().num_processes,))
        for layer in model.roberta.encoder.layer:
            fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    return FullyShardedDataParallel(model, use_orig_params=True, device_id=torch.device("cpu"))


def sharded(mode, out_dir):
    from torch.distributed.fsdp import FullyShardedDataParallel

    reference = tiny_roberta()
    model = shard(copy.deepcopy(reference), mode)
    callback, optimizer = train(model, out_dir)
    masks, placement = callback.masks, callback.masks.placement
    local_masks = placement.local_masks(masks)
    with torch.no_grad():
        pruned_nonzero_local = sum(int(local_part(masks.params[n].data)[~m].ne(0).sum()) for n, m in local_masks.items())
        moments_nonzero_local = sum(
            int(local_part(v)[~m].ne(0).sum())
            for n, m in local_masks.items()
            for v in (optimizer.state.get(masks.params[n]) or {}).values()
            if torch.is_tensor(v) and local_part(v).shape == m.shape
        )
    if mode == "fsdp2":
        full = {n: p.detach().full_tensor() for n, p in model.named_parameters()}
    else:
        with FullyShardedDataParallel.summon_full_params(model):
            full = {n: p.detach().clone() for n, p in model.named_parameters()}
    pruned_nonzero_full = sum(int(full[n][~m].ne(0).sum()) for n, m in masks.masks.items())
    record = {
        "placement": placement.name,
        "names": masks.names,
        "digest": masks.digest(),
        "pruned": sum(int((~m).sum()) for m in masks.masks.values()),
        "numel": masks.numel(),
        "local_mask_numel": sum(m.numel() for m in local_masks.values()),
        "pruned_nonzero_local": pruned_nonzero_local,
        "moments_nonzero_local": moments_nonzero_local,
        "pruned_nonzero_full": pruned_nonzero_full,
        "weight_zeros": sum(masks.weight_zeros().values()),
        "steps": callback.step,
    }
    # A dense run's report (SparseTrainer keeps its callback off the Trainer's list and binds it only to
    # report) counts the sharded weights at full size.
    dense = SparsityCallback(SparsityConfig(method="dense"))
    dense_model = shard(copy.deepcopy(reference), mode)
    dense.bind_for_report(dense_model)
    dense_report = sparsity_report(dense_model, masks=dense.masks, config=dense.config)
    record["dense_report"] = {"numel": dense_report.numel, "zeros": dense_report.zeros,
                              "target": dense_report.target}
    # Every rank trains the reference too: mask changes end in a collective agreement check.
    ref_callback, _ = train(reference, out_dir)
    record["reference_digest"] = ref_callback.masks.digest()
    record["max_weight_difference"] = max(
        float((full[n] - p.detach()).abs().max()) for n, p in reference.named_parameters()
    )
    return record


class CallCounter:
    """Counts calls of MaskSet's apply_to_* methods (every masking pass enters through them)."""

    METHODS = ("apply_to_weights", "apply_to_optimizer", "apply_to_grads")

    def __enter__(self):
        self.counts = dict.fromkeys(self.METHODS, 0)
        self.originals = {name: getattr(MaskSet, name) for name in self.METHODS}
        for name, original in self.originals.items():
            setattr(MaskSet, name, self._counting(name, original))
        return self

    def _counting(self, name, original):
        def counted(masks, *args, **kwargs):
            self.counts[name] += 1
            return original(masks, *args, **kwargs)

        return counted

    def __exit__(self, *exc):
        for name, original in self.originals.items():
            setattr(MaskSet, name, original)


def nonzero_at_pruned(callback, optimizer):
    """Entries at pruned positions that are not exactly zero: in the weights this rank holds, and in their
    optimizer buffers."""
    masks, placement = callback.masks, callback.masks.placement
    if placement is None:
        held = [(p, m) for _, p, m in masks.masked()]
    else:
        local = placement.local_masks(masks)
        held = [(p, local[n]) for n, p, _ in masks.masked()]
    with torch.no_grad():
        weights = sum(int(local_part(p.data)[~m].ne(0).sum()) for p, m in held)
        buffers = sum(
            int(local_part(v)[~m].ne(0).sum())
            for p, m in held
            for v in (optimizer.state.get(p) or {}).values()
            if torch.is_tensor(v) and local_part(v).shape == m.shape
        )
    return weights, buffers


def upkeep(out_dir):
    """A fixed mask for STEPS steps on each backend and optimizer: masking passes counted, zeros checked."""
    from torch.nn.parallel import DistributedDataParallel

    record = {}
    for backend in ("ddp", "fsdp2", "fsdp1"):
        for name, optimizer in (("adamw", adamw), ("shifting_sgd", shifting_sgd)):
            model, wrapped = tiny_roberta(), None
            if backend == "ddp":
                wrapped = DistributedDataParallel(model)
            else:
                model = shard(model, backend)
            with CallCounter() as counter:
                callback, opt = train(model, out_dir, method="omp_before", optimizer=optimizer, wrapped=wrapped)
            weights, buffers = nonzero_at_pruned(callback, opt)
            placement = callback.masks.placement
            record[f"{backend}/{name}"] = {
                "placement": None if placement is None else placement.name,
                "steps": callback.step,
                "counts": counter.counts,
                "pruned": callback.masks.pruned(),
                "numel": callback.masks.numel(),
                "pruned_nonzero_local": weights,
                "moments_nonzero_local": buffers,
                "digest": callback.masks.digest(),
            }
    return record


def agree(out_dir):
    state = PartialState()
    model = tiny_roberta()
    masks = MaskSet.for_model(model)
    masks.update({n: p.detach().abs() > 0.02 for n, p in masks.params.items()})
    masks.apply_to_weights()
    before = distributed.masks_digests(masks)
    if state.process_index == 1:
        first = masks.names[0]
        masks.set(first, ~masks.masks[first])
        with torch.no_grad():
            masks.params[first].add_(1.0)
    try:
        distributed.check_masks_agree(masks)
        raised = None
    except RuntimeError as err:
        raised = str(err)
    distributed.agree_masks(masks)
    after = distributed.masks_digests(masks)
    weights = torch.cat([p.detach().reshape(-1) for p in masks.params.values()])
    return {
        "equal_before": len(set(before)) == 1,
        "raised": raised,
        "equal_after": len(set(after)) == 1,
        "digest": masks.digest(),
        "weights_sum": float(weights.double().sum()),
    }


def main():
    out_dir, modes = sys.argv[1], sys.argv[2:]
    state = PartialState(cpu=True)
    for mode in modes:
        torch.manual_seed(0)
        record = {"agree": agree, "upkeep": upkeep}.get(mode, lambda out: sharded(mode, out))(out_dir)
        record["process_index"], record["num_processes"] = state.process_index, state.num_processes
        with open(os.path.join(out_dir, f"{mode}-rank-{state.process_index}.json"), "w") as handle:
            json.dump(record, handle)
        state.wait_for_everyone()
    state.destroy_process_group()


if __name__ == "__main__":
    main()
