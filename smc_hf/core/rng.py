"""The random-number state of a process as JSON, so a run resumed between rounds continues the same stream.

Python's, NumPy's and torch's (CPU and every CUDA device) generators are captured; the state is plain data
(hex strings and integer lists), never a pickle.
"""

from __future__ import annotations

import random
from typing import Any

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
