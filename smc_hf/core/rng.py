"""Random-number state: a process's generators as JSON, and per-layer draws from one seeded stream.

`capture_rng_state`/`restore_rng_state`: Python's, NumPy's and torch's (CPU and every CUDA device) generators
as plain data (hex strings and integer lists), never a pickle, so a run resumed between rounds continues the
same stream. `LayerDraws`: one generator's numbers split over layers, each layer drawn again on demand.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np
import torch


def _tensor_hex(state: torch.Tensor) -> str:
    return bytes(state.cpu().numpy().tobytes()).hex()


def _hex_tensor(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(bytes.fromhex(text)), dtype=torch.uint8).clone()


def capture_rng_state() -> dict[str, Any]:
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": {"version": version, "internal": list(internal), "gauss": gauss},
        "numpy": {"name": name, "keys": [int(k) for k in keys], "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": _tensor_hex(torch.get_rng_state()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [_tensor_hex(s) for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the generators from `capture_rng_state()`'s output (CUDA only where it was captured and is present)."""
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    nps = state["numpy"]
    np.random.set_state((nps["name"], np.array(nps["keys"], dtype=np.uint32), nps["pos"], nps["has_gauss"],
                         nps["cached_gaussian"]))
    torch.set_rng_state(_hex_tensor(state["torch"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([_hex_tensor(s) for s in cuda])


class LayerDraws:
    """Uniform [0, 1) float32 numbers for a sequence of layers, drawn layer after layer from one CPU generator
    seeded by `seed`: layer i holds the numbers `torch.rand` gives after those of layers 0..i-1 (equal to one
    `torch.rand` per layer in order, and to any split of a layer into consecutive chunks).

    Any layer can be drawn again, in any order, without keeping the numbers: the generator's state at the
    start of each layer is kept (5 KB) once reached; reaching a later layer first draws the skipped ones once.
    """

    #: Numbers drawn at a time while skipping layers.
    SKIP_CHUNK = 1 << 20

    def __init__(self, seed: int, sizes: Sequence[int]):
        self.sizes = [int(n) for n in sizes]
        self._generator = torch.Generator().manual_seed(int(seed))
        self._states = {0: self._generator.get_state()}

    def generator(self, index: int) -> torch.Generator:
        """The generator, set to the first number of layer `index` (shared: draw from it before asking again)."""
        if not 0 <= index < len(self.sizes):
            raise IndexError(f"layer {index} of {len(self.sizes)}")
        start = max(i for i in self._states if i <= index)
        self._generator.set_state(self._states[start])
        scratch = None
        for i in range(start, index):
            left = self.sizes[i]
            while left:
                n = min(left, self.SKIP_CHUNK)
                scratch = scratch if scratch is not None else torch.empty(min(self.SKIP_CHUNK, max(self.sizes)))
                scratch[:n].uniform_(generator=self._generator)
                left -= n
            self._states[i + 1] = self._generator.get_state()
        return self._generator

    def draw(self, index: int, out: torch.Tensor) -> torch.Tensor:
        """Fill `out` (CPU float32, the layer's numel) with layer `index`'s numbers; returns it."""
        if out.numel() != self.sizes[index]:
            raise ValueError(f"layer {index} has {self.sizes[index]} numbers, out has {out.numel()}")
        out.uniform_(generator=self.generator(index))
        if index + 1 < len(self.sizes):
            self._states.setdefault(index + 1, self._generator.get_state())
        return out
