"""2:4 inference with torch's semi-structured sparse kernels against dense, on a linear-heavy model (CUDA only).

The model is a stack of Llama-7B-shaped feed-forward blocks (4096 -> 11008 -> 4096, SiLU gate, fp16; `--quick`:
2048 -> 5504 -> 2048), the layers where nearly all of a decoder's inference FLOPs are. Every Linear weight gets a
2:4 magnitude mask along its input dimension (two of each four consecutive inputs kept), then the sparse copy
replaces each weight with `torch.sparse.to_sparse_semi_structured(weight)` (cuSPARSELt or CUTLASS kernels, Ampere
and newer). Both copies run the same inputs; the benchmark prints the median forward time of each (CUDA events,
after warm-up), the speed-up, and the largest difference between their outputs (the sparse kernels must compute
the same function as the dense model with zeros).

Without CUDA it prints why it measured nothing and exits 0 (its JSON says `"skipped"`).

    python benchmarks/semi_structured.py           # 4 blocks, 4096 wide, 8 x 512 tokens
    python benchmarks/semi_structured.py --quick   # 2 blocks, 2048 wide, 4 x 256 tokens
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys


def two_four_mask(weight):
    """Keep the 2 largest |w| of each 4 consecutive inputs of every output row."""
    import torch

    groups = weight.abs().reshape(-1, 4)
    keep = torch.zeros_like(groups, dtype=torch.bool)
    keep.scatter_(1, groups.topk(2, dim=1).indices, True)
    return keep.reshape(weight.shape)


def build(hidden: int, inter: int, blocks: int):
    import torch
    from torch import nn

    class GatedMLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.gate = nn.Linear(hidden, inter, bias=False)
            self.up = nn.Linear(hidden, inter, bias=False)
            self.down = nn.Linear(inter, hidden, bias=False)

        def forward(self, x):
            return x + self.down(nn.functional.silu(self.gate(x)) * self.up(x))

    torch.manual_seed(0)
    return nn.Sequential(*[GatedMLP() for _ in range(blocks)])


def median_ms(model, x, repeats: int) -> float:
    import torch

    with torch.inference_mode():
        for _ in range(3):
            model(x)
        times = []
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            model(x)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
    return statistics.median(times)


def measure(quick: bool) -> dict:
    import torch
    from torch.sparse import to_sparse_semi_structured

    hidden, inter, blocks, batch, tokens = (2048, 5504, 2, 4, 256) if quick else (4096, 11008, 4, 8, 512)
    dense = build(hidden, inter, blocks).half().cuda().eval()
    with torch.no_grad():
        for module in dense.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.mul_(two_four_mask(module.weight))
    sparse = copy.deepcopy(dense)
    for module in sparse.modules():
        if isinstance(module, torch.nn.Linear):
            module.weight = torch.nn.Parameter(to_sparse_semi_structured(module.weight), requires_grad=False)
    x = torch.randn(batch * tokens, hidden, dtype=torch.float16, device="cuda")
    with torch.inference_mode():
        difference = float((dense(x) - sparse(x)).abs().max())
        scale = float(dense(x).abs().max())
    dense_ms, sparse_ms = median_ms(dense, x, 20), median_ms(sparse, x, 20)
    return {
        "title": f"2:4 semi-structured kernels vs dense, fp16, {blocks} gated MLP blocks {hidden}->{inter}, "
                 f"{batch * tokens} tokens, {torch.cuda.get_device_name()}",
        "headline": [{"name": "2:4 forward speed-up over dense", "value": round(dense_ms / sparse_ms, 3), "unit": "x"}],
        "dense_ms": dense_ms, "sparse_ms": sparse_ms, "speedup": dense_ms / sparse_ms,
        "max_abs_difference": difference, "max_abs_output": scale, "torch": torch.__version__,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smaller model")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    opts = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        result = {"title": "2:4 semi-structured kernels vs dense", "skipped": "no CUDA device: not measured"}
        print("semi_structured: skipped, torch's semi-structured sparse kernels need a CUDA GPU (Ampere or newer) "
              "and none is available: not measured")
    else:
        result = measure(opts.quick)
        print(f"{result['title']}\n  dense {result['dense_ms']:.3f} ms, 2:4 sparse {result['sparse_ms']:.3f} ms: "
              f"{result['speedup']:.2f}x; max |dense - sparse| {result['max_abs_difference']:.3g} "
              f"(max |output| {result['max_abs_output']:.3g})")
    if opts.json:
        with open(opts.json, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
