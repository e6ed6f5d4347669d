"""`run_glue_like.py` with a recording callback, for the multi-process tests (launched by `accelerate launch`).

Each rank writes `rank-<i>.json` into `--output_dir` at the end of training: its mask digest, how many pruned
weights and optimizer-buffer entries are not exactly zero, and its step count. `SMC_TEST_KILL_AT_STEP=N` ends
every process abruptly (os._exit) right after the checkpoint of step N is written, as a killed job would.
"""

from __future__ import annotations

import json
import os
import sys
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import torch  # noqa: E402
from accelerate import PartialState  # noqa: E402

import run_glue_like  # noqa: E402
import smc_hf.training.trainer  # noqa: E402
from smc_hf import SparsityCallback  # noqa: E402
from smc_hf.core.masks import unwrap_optimizer  # noqa: E402


def _local(tensor):
    return tensor.to_local() if hasattr(tensor, "to_local") else tensor


class RecordingCallback(SparsityCallback):
    def on_train_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        super().on_train_end(args, state, control, model=model, optimizer=optimizer, **kwargs)
        placement = self.masks.placement
        if placement is None:
            held = {n: (self.masks.params[n], m) for n, m in self.masks.masks.items()}
        else:
            held = dict(placement.local_weight_pairs(self.masks))
        with torch.no_grad():
            weights = sum(int(w[~m].ne(0).sum()) for w, m in held.values())
            buffers = None  # DeepSpeed keys its optimizer state by flat partitions, not by parameter
            if placement is None or placement.name in ("dtensor", "fsdp1"):
                opt_state = unwrap_optimizer(optimizer).state
                buffers = sum(
                    int(_local(v)[~m].ne(0).sum())
                    for n, (_, m) in held.items()
                    for v in (opt_state.get(self.masks.params[n]) or {}).values()
                    if torch.is_tensor(v) and _local(v).shape == m.shape
                )
        record = {
            "process_index": PartialState().process_index,
            "num_processes": PartialState().num_processes,
            "placement": None if placement is None else placement.name,
            "digest": self.masks.digest(),
            "pruned_nonzero_weights": weights,
            "pruned_nonzero_optimizer_entries": buffers,
            "pruned": sum(int((~m).sum()) for m in self.masks.masks.values()),
            "numel": self.masks.numel(),
            "steps": self.step,
        }
        os.makedirs(args.output_dir, exist_ok=True)  # a multi-round method's round folder may not exist yet
        with open(os.path.join(args.output_dir, f"rank-{record['process_index']}.json"), "w") as handle:
            json.dump(record, handle)

    def on_save(self, args, state, control, **kwargs):
        super().on_save(args, state, control, **kwargs)
        if str(state.global_step) == os.environ.get("SMC_TEST_KILL_AT_STEP"):
            PartialState().wait_for_everyone()
            os._exit(17)


if __name__ == "__main__":
    with mock.patch.object(smc_hf.training.trainer, "SparsityCallback", RecordingCallback):
        run_glue_like.main()
