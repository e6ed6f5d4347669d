"""Input statistics of Linear layers, gathered by forward hooks: what activation-aware pruning reads.

- `gram`: H = (2/n) sum_t x_t x_t^T over the n tokens seen (SparseGPT's Hessian of the layer's squared error).
- `norms`: ||X_j||^2 / n, the mean square of every input column (Wanda's ||X_j||_2, up to a factor that is the
  same for every weight of the layer).

Sums are float32 on the layer's device whatever the model's dtype. Tokens the batch's `attention_mask` marks
as padding are left out when the mask lines up with the layer's input (one entry per input row); otherwise
every row counts. The weight of a `transformers` `Conv1D` is stored (in, out), an `nn.Linear`'s (out, in):
`smc_hf.core.patterns.input_dim_of` says which dimension of the weight meets the input.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .patterns import input_dim_of

KINDS = ("gram", "norms")


def weight_modules(model: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    """The Linear / Conv1D module owning each selected `<module>.weight`; a clear error for any other weight."""
    modules = dict(model.named_modules())
    found, bad = {}, []
    for name in names:
        path, _, attr = name.rpartition(".")
        module = modules.get(path)
        if attr != "weight" or module is None or not (isinstance(module, nn.Linear) or input_dim_of(module) == 0):
            bad.append(name)
        else:
            found[name] = module
    if bad:
        raise ValueError(
            f"activation-aware pruning reads the inputs of Linear (or Conv1D) layers, but {bad[:5]} "
            f"{'is' if len(bad) == 1 else 'are'} not such a layer's weight (e.g. nn.MultiheadAttention's packed "
            "in_proj_weight, an embedding); leave them out of the selection with ignore=[regex, ...]"
        )
    return found


class LayerStats:
    """Running input statistics of one layer (see the module docstring)."""

    def __init__(self, module: nn.Module, kind: str, name: str = "layer"):
        if kind not in KINDS:
            raise ValueError(f"statistics kind must be one of {KINDS}, got {kind!r}")
        weight = module.weight
        self.kind, self.name = kind, name
        self.input_dim = input_dim_of(module)
        self.columns = weight.shape[self.input_dim]
        shape = (self.columns, self.columns) if kind == "gram" else (self.columns,)
        self.sum = torch.zeros(shape, dtype=torch.float32, device=weight.device)
        self.tokens = 0

    @torch.no_grad()
    def add(self, x: torch.Tensor, token_mask: Optional[torch.Tensor]) -> None:
        rows = x.detach().reshape(-1, x.shape[-1])
        if token_mask is not None and token_mask.numel() == rows.shape[0]:
            rows = rows[token_mask.reshape(-1).to(rows.device)]
        rows = rows.float()
        if self.kind == "gram":
            self.sum.addmm_(rows.t(), rows)
        else:
            self.sum.add_(rows.square().sum(0))
        self.tokens += rows.shape[0]

    def value(self) -> torch.Tensor:
        """H = 2/n sum x x^T (gram) or sum x_j^2 / n (norms); consumes the running sum."""
        if self.tokens == 0:
            raise ValueError(
                f"{self.name} saw no calibration tokens (every token was padding, or no batch reached the layer); "
                "give calibration batches with real tokens"
            )
        scale = (2.0 if self.kind == "gram" else 1.0) / self.tokens
        value, self.sum = self.sum.mul_(scale), None
        return value


class ActivationRecorder:
    """Forward hooks that add each call's input to the `LayerStats` of its layer, while installed (a context)."""

    def __init__(self, modules: dict[str, nn.Module], kind: str):
        self.modules = modules
        self.stats = {name: LayerStats(module, kind, name) for name, module in modules.items()}
        #: The current batch's token mask (True = real token), set by whoever runs the forward passes.
        self.token_mask: Optional[torch.Tensor] = None
        self._handles = []

    def _hook(self, name: str):
        def hook(module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            self.stats[name].add(x, self.token_mask)

        return hook

    def __enter__(self) -> "ActivationRecorder":
        self._handles = [
            module.register_forward_pre_hook(self._hook(name), with_kwargs=True) for name, module in self.modules.items()
        ]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
