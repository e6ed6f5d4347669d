"""Step overhead of keeping a fixed mask: stock Trainer vs SparseTrainer vs torch.nn.utils.prune hooks.

One process, one BERT-base-shaped model (random init, CPU), the three setups interleaved in repeated
short runs so machine noise hits them alike. Prints the median step time of each as a ratio to the stock
Trainer, the time spent inside the sparsity callback per step (the direct cost of mask upkeep), and the
extra memory per selected weight. `--json PATH` also writes the figures (see benchmarks/README.md).

    python benchmarks/overhead.py            # BERT-base shape, batch 8 x 128 tokens
    python benchmarks/overhead.py --quick    # a 4-layer, 256-wide model, for a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from torch.nn.utils import prune as torch_prune  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from smc_hf import SparseTrainer, SparsityCallback, SparsityConfig  # noqa: E402
from smc_hf.core.selection import select_parameters  # noqa: E402


class RandomTokens(Dataset):
    def __init__(self, n, length, vocab):
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, vocab, (n, length), generator=gen)
        self.labels = torch.randint(0, 2, (n,), generator=gen)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step (forward, backward, clip, step, masks), from the Trainer's events."""

    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


class TimedSparsityCallback(SparsityCallback):
    """The real callback, with the time spent in its per-step events recorded."""

    def __init__(self, config=None):
        super().__init__(config)
        self.upkeep = []

    def on_pre_optimizer_step(self, *args, **kwargs):
        start = time.perf_counter()
        super().on_pre_optimizer_step(*args, **kwargs)
        self._pre = time.perf_counter() - start

    def on_optimizer_step(self, *args, **kwargs):
        start = time.perf_counter()
        super().on_optimizer_step(*args, **kwargs)
        self.upkeep.append(self._pre + time.perf_counter() - start)


def build_model(quick: bool):
    torch.manual_seed(0)
    if quick:
        config = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    else:
        config = BertConfig()  # BERT-base: 12 layers, 768 wide, 85M weights in the Linear layers
    return BertForSequenceClassification(config)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sparsity", type=float, default=0.9)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each setup")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run (the first is dropped)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--json", help="also write the figures to this file")
    opts = parser.parse_args(argv)
    if opts.quick:
        opts.batch, opts.length = 8, 64

    data = RandomTokens(opts.batch * opts.steps, opts.length, 30000)
    tmp = tempfile.mkdtemp(prefix="smc_overhead_")

    def args():
        return TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=opts.batch, max_steps=opts.steps, learning_rate=1e-4,
            weight_decay=0.01, save_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True,
            logging_steps=10**6, seed=0,
        )

    cfg = SparsityConfig(method="omp", sparsity=opts.sparsity)
    stock_model, sparse_model, hook_model = build_model(opts.quick), build_model(opts.quick), build_model(opts.quick)
    selected = select_parameters(hook_model)
    modules = dict(hook_model.named_modules())
    targets = [(modules[name.rsplit(".", 1)[0]], "weight") for name in selected]
    torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=opts.sparsity)

    timers = {"stock Trainer": StepTimer(), "SparseTrainer (fixed mask)": StepTimer(), "torch.nn.utils.prune": StepTimer()}
    sparsity_cb = TimedSparsityCallback(cfg)
    trainers = {
        "stock Trainer": Trainer(model=stock_model, args=args(), train_dataset=data,
                                 callbacks=[timers["stock Trainer"]]),
        "SparseTrainer (fixed mask)": SparseTrainer(model=sparse_model, args=args(), train_dataset=data,
                                                   callbacks=[sparsity_cb, timers["SparseTrainer (fixed mask)"]]),
        "torch.nn.utils.prune": Trainer(model=hook_model, args=args(), train_dataset=data,
                                        callbacks=[timers["torch.nn.utils.prune"]]),
    }
    for r in range(opts.repeats):
        for name, trainer in trainers.items():
            timers[name]._drop = len(timers[name].times)
            trainer.train()
            del timers[name].times[timers[name]._drop]  # the first step of a run pays for optimizer creation
            print(f"run {r + 1}/{opts.repeats} {name}: {statistics.median(timers[name].times):.3f} s/step", flush=True)

    medians = {name: statistics.median(t.times) for name, t in timers.items()}
    base = medians["stock Trainer"]
    masks = sparsity_cb.masks
    mask_bytes = sum(m.numel() * m.element_size() for m in masks.masks.values())
    hook_bytes = sum(b.numel() * b.element_size() for n, b in hook_model.named_buffers() if n.endswith("weight_mask"))
    hook_orig = sum(p.numel() * p.element_size() for n, p in hook_model.named_parameters() if n.endswith("weight_orig"))
    upkeep = statistics.median(sparsity_cb.upkeep)
    figures = {
        "model": "quick" if opts.quick else "bert-base",
        "selected_weights": masks.numel(),
        "batch": opts.batch, "length": opts.length, "sparsity": opts.sparsity,
        "median_step_s": medians,
        "ratio_to_stock": {name: m / base for name, m in medians.items()},
        "mask_upkeep_s_per_step": upkeep,
        "mask_upkeep_fraction_of_stock_step": upkeep / base,
        "extra_bytes_per_selected_weight": {
            "SparseTrainer": mask_bytes / masks.numel(),
            # prune hooks keep weight_orig and a float mask beside the recomputed weight
            "torch.nn.utils.prune": (hook_bytes + hook_orig) / masks.numel(),
        },
        "torch_threads": torch.get_num_threads(),
    }
    shape = f"{figures['model']}, batch {opts.batch}x{opts.length}, sparsity {opts.sparsity}"
    figures["title"] = f"Mask upkeep per training step ({shape}, CPU, {torch.get_num_threads()} threads)"
    figures["headline"] = [
        {"name": "step time, SparseTrainer (fixed mask) / stock Trainer",
         "value": round(medians["SparseTrainer (fixed mask)"] / base, 3), "unit": "x", "note": shape},
        {"name": "step time, torch.nn.utils.prune hooks / stock Trainer",
         "value": round(medians["torch.nn.utils.prune"] / base, 3), "unit": "x", "note": shape},
        {"name": "mask upkeep (callback time) / stock step", "value": round(100 * upkeep / base, 2), "unit": "%"},
        {"name": "mask memory per selected weight", "value": mask_bytes / masks.numel(), "unit": "B"},
    ]
    figures["tables"] = [{
        "title": "median step time",
        "columns": ["setup", "s/step", "ratio to stock"],
        "rows": [[name, round(m, 4), round(m / base, 3)] for name, m in medians.items()],
    }]
    print(f"\nselected weights: {masks.numel():,}; batch {opts.batch} x {opts.length} tokens; "
          f"sparsity {opts.sparsity}; {torch.get_num_threads()} threads")
    print(f"{'setup':<30}{'median s/step':>15}{'ratio':>10}")
    for name, m in medians.items():
        print(f"{name:<30}{m:>15.3f}{m / base:>10.3f}")
    print(f"mask upkeep inside the callback: {1000 * upkeep:.1f} ms/step = {100 * upkeep / base:.2f}% of a stock step")
    print(f"extra memory per selected weight: SparseTrainer {mask_bytes / masks.numel():.2f} B, "
          f"torch.nn.utils.prune {(hook_bytes + hook_orig) / masks.numel():.2f} B (weight_orig + float mask)")
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    main()
