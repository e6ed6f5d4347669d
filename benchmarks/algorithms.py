"""Cost of the mask updates: a GMP update, a re-allocation from stored scores, a SNIP scoring pass, a RigL update
and an oBERT pruning step.

GMP and oBERT re-allocate at every pruning update during training: the GMP row is one update (|w| scored per
layer, global selection, masks present from the previous update, 50% -> 60%); the re-allocation row is the
selection oBERT (and SNIP) run on their stored scores (one float per weight), without the Fisher pass.

One process, one BERT-base-shaped model (random init, CPU). Each figure is a ratio to one dense training step
(forward, backward, AdamW step) measured in the same process, for time and for peak memory above the resting
process (sampled RSS, after returning freed memory to the OS). See benchmarks/README.md for `--json`.

    python benchmarks/algorithms.py            # BERT-base shape, batch 8 x 128, oBERT blocks of 8
    python benchmarks/algorithms.py --quick    # a 4-layer, 256-wide model, for a smoke run
    python benchmarks/algorithms.py --skip snip,rigl,obert   # only the dense step and the two re-allocations

oBERT holds 4 * N * B bytes of Fisher blocks (N selected weights, B the block size): the paper's B = 50 needs
17 GB for BERT-base, more than this benchmark's machine spares, so the default here is B = 8 (2.7 GB); pass
`--obert-block-size 50` where memory allows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from rss import release_memory  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification  # noqa: E402

from smc_hf import SparsityConfig  # noqa: E402
from smc_hf.core.allocation import allocate  # noqa: E402
from smc_hf.core.context import PruneContext  # noqa: E402
from smc_hf.core.criteria import CRITERIA  # noqa: E402
from smc_hf.core.masks import MaskSet  # noqa: E402
from smc_hf.methods import build_method  # noqa: E402

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE



class Measured:
    """Wall time and peak RSS above the resting process of the code inside the `with` block."""

    def __enter__(self):
        release_memory()
        self.base = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        self.start = time.perf_counter()
        return self

    def _sample(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        self.extra_bytes = self.peak - self.base
        return False


def build_model(quick: bool):
    torch.manual_seed(0)
    if quick:
        config = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    else:
        config = BertConfig()
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    return BertForSequenceClassification(config)


def make_batches(count: int, batch: int, length: int, vocab: int):
    gen = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(5, vocab, (batch, length), generator=gen),
             "attention_mask": torch.ones(batch, length, dtype=torch.long),
             "labels": torch.randint(0, 2, (batch,), generator=gen)} for _ in range(count)]


def dense_step(model, optimizer, batch):
    model.train()
    model(**batch).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def rigl_step(model, masks, optimizer, batches, ctx, sparsity):
    rigl = build_method(SparsityConfig(method="rigl", sparsity=sparsity, update_every=100))
    rigl.setup(ctx(max_steps=600))
    rigl.on_round_begin(ctx())
    model.train()
    model(**batches[0]).loss.backward()
    with Measured() as update:
        rigl.before_optimizer_step(ctx(step=99, max_steps=600))
        rigl.after_optimizer_step(ctx(step=100, max_steps=600))
    optimizer.zero_grad(set_to_none=True)
    return update


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sparsity", type=float, default=0.9, help="sparsity of the RigL update")
    parser.add_argument("--repeats", type=int, default=3, help="timed dense steps (after one warm-up)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--obert-block-size", type=int, default=8)
    parser.add_argument("--obert-num-grads", type=int, default=4, help="gradient samples in the timed oBERT step")
    parser.add_argument("--skip", default="", help="comma-separated rows to leave out: snip, rigl, obert")
    parser.add_argument("--json", help="also write the figures to this file")
    opts = parser.parse_args(argv)
    skip = {name for name in opts.skip.split(",") if name}
    unknown = skip - {"snip", "rigl", "obert"}
    if unknown:
        parser.error(f"--skip {','.join(sorted(unknown))}: rows that can be skipped are snip, rigl, obert")
    if opts.quick:
        opts.length, opts.repeats = 64, 2

    model = build_model(opts.quick)
    batches = make_batches(max(opts.obert_num_grads, 1), opts.batch, opts.length, model.config.vocab_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, weight_decay=0.01)
    masks = MaskSet.for_model(model)
    print(f"model: {'quick' if opts.quick else 'bert-base'}, {masks.numel():,} selected weights; "
          f"batch {opts.batch} x {opts.length}; {torch.get_num_threads()} threads", flush=True)

    dense_step(model, optimizer, batches[0])  # warm-up: creates the AdamW state
    dense = []
    for r in range(opts.repeats):
        with Measured() as m:
            dense_step(model, optimizer, batches[0])
        dense.append(m)
        print(f"dense step {r + 1}/{opts.repeats}: {m.seconds:.2f} s, +{m.extra_bytes / 2**20:.0f} MiB", flush=True)
    dense_s = statistics.median(m.seconds for m in dense)
    dense_b = statistics.median(m.extra_bytes for m in dense)

    def ctx(**kw):
        return PruneContext(model=model, masks=masks, seed=0, optimizer=optimizer, **kw)

    rows = [("dense training step", dense_s, dense_b)]
    headline = []

    def row(name, measured, note=None):
        rows.append((name, measured.seconds, measured.extra_bytes))
        headline.append({"name": f"{name} / dense step (time)", "value": round(measured.seconds / dense_s, 4),
                         "unit": "x", **({"note": note} if note else {})})
        print(f"{name}: {measured.seconds:.3f} s, +{measured.extra_bytes / 2**20:.0f} MiB", flush=True)

    # GMP: one pruning update with masks present (|w| scored per layer, global selection), 50% -> 60%.
    gmp = build_method(SparsityConfig(method="gmp", sparsity=0.9, update_every=100))
    gmp.prune_to(ctx(), 0.5)
    masks.apply()
    with Measured() as gmp_update:
        gmp.prune_to(ctx(), 0.6)
        masks.apply(optimizer)
    row("GMP update (global magnitude, 50% -> 60%)", gmp_update, "masks present: pruned weights ranked lowest")

    # The selection oBERT and SNIP run on their stored scores, one float per weight (here |w| x noise).
    gen = torch.Generator().manual_seed(1)
    stored = {n: (p.detach().abs() * torch.rand(p.shape, generator=gen)).masked_fill_(~masks.mask(n), float("-inf"))
              for n, p in masks.named_parameters()}
    with Measured() as realloc:
        allocate(stored, 0.7, "global")
    del stored
    row("re-allocation from stored scores (global, 60% -> 70%)", realloc, "oBERT's and SNIP's selection step")
    masks.clear()

    if "snip" not in skip:  # one scoring pass over one batch (forward, backward, |g * w|)
        with Measured() as snip:
            CRITERIA.get("snip")(ctx(dataloader=batches[:1]), batches=1)
        row("SNIP scoring pass (1 batch)", snip)

    if "rigl" not in skip:  # one update at the sparsity, dense gradients of one batch in .grad, AdamW state
        rigl_update = rigl_step(model, masks, optimizer, batches, ctx, opts.sparsity)
        row(f"RigL update (sparsity {opts.sparsity})", rigl_update)
        masks.clear()

    if "obert" not in skip:  # one pruning step (Fisher from the gradient samples, saliencies, allocation, OBS)
        obert_cfg = SparsityConfig(method="obert_gradual", sparsity=0.5, obert_block_size=opts.obert_block_size,
                                   obert_num_grads=opts.obert_num_grads)
        obert = build_method(obert_cfg)
        with Measured() as obert_step:
            obert.prune_to(ctx(dataloader=batches[:opts.obert_num_grads]), 0.5)
        row(f"oBERT pruning step ({opts.obert_num_grads} grads, B={opts.obert_block_size})", obert_step,
            f"{opts.obert_num_grads} gradient samples, blocks of {opts.obert_block_size}")

    n = masks.numel()
    print(f"\n{'operation':<56}{'seconds':>10}{'x step':>9}{'MiB':>9}{'x step':>9}")
    for name, seconds, extra in rows:
        print(f"{name:<56}{seconds:>10.3f}{seconds / dense_s:>9.4f}{extra / 2**20:>9.0f}"
              f"{extra / max(dense_b, 1):>9.2f}")
    fisher_bound = 4 * n * opts.obert_block_size
    print(f"oBERT Fisher bound 4*N*B = {fisher_bound / 2**30:.2f} GiB (B = 50: {4 * n * 50 / 2**30:.2f} GiB)")

    model_name = "quick (4 x 256)" if opts.quick else "BERT-base"
    figures = {
        "title": f"Mask updates (GMP, re-allocation, SNIP, RigL, oBERT) vs one dense training step, {model_name}, CPU",
        "headline": headline,
        "tables": [{
            "title": f"{model_name}, batch {opts.batch} x {opts.length}, {torch.get_num_threads()} threads",
            "columns": ["operation", "seconds", "x dense step", "peak extra MiB", "x dense step"],
            "rows": [[name, round(s, 4), round(s / dense_s, 4), round(b / 2**20, 1), round(b / max(dense_b, 1), 3)]
                     for name, s, b in rows],
        }],
        "selected_weights": n,
        "obert_fisher_bound_bytes": fisher_bound,
        "torch_threads": torch.get_num_threads(),
    }
    if opts.json:
        with open(opts.json, "w") as f:
            json.dump(figures, f, indent=2)
    return figures


if __name__ == "__main__":
    main()
