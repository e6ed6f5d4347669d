"""Run by benchmarks/oneshot.py with the python of llm-compressor's own venv (it pins transformers <= 5.17).

Reads a spec (model folder, `bert` or `llama`, calibration tokens in a safetensors file, the modifiers to run),
prunes a fresh copy of the model with each modifier through `llmcompressor.oneshot`, and writes, per modifier,
the Linear weights to `<label>.safetensors` with its time and peak RSS above the RSS before it; the caller scores
them with the same metrics as smc_hf's methods. Imports nothing from smc_hf (another venv, other versions).
"""

import json
import os
import sys
import time
from importlib.metadata import version

import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from transformers import AutoModel, AutoModelForCausalLM

import llmcompressor.modifiers.pruning as pruning
from llmcompressor import oneshot


def status_bytes(field):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def reset_peak():
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def modifier(entry, sparsity, kind):
    # The default selection of smc_hf: every Linear of the blocks; never the pooler or lm_head.
    ignore = ["re:.*lm_head", "re:.*pooler.*"]
    if entry["modifier"] == "MagnitudePruningModifier":
        return pruning.MagnitudePruningModifier(
            targets=["re:.*layers?\\.\\d+\\..*weight$"], init_sparsity=sparsity, final_sparsity=sparsity,
            start=0, end=1, update=1, mask_structure=entry["mask_structure"].replace("0:0", "unstructured"))
    cls = getattr(pruning, entry["modifier"])
    return cls(sparsity=sparsity, mask_structure=entry["mask_structure"], targets=["Linear"], ignore=ignore)


def run(spec_path):
    with open(spec_path, encoding="utf-8") as handle:
        spec = json.load(handle)
    calib = load_file(spec["calibration"])
    data = Dataset.from_dict({k: v.tolist() for k, v in calib.items()})
    loader = AutoModel if spec["kind"] == "bert" else AutoModelForCausalLM
    block = "BertLayer" if spec["kind"] == "bert" else "LlamaDecoderLayer"
    results = {"versions": {p: version(p) for p in ("llmcompressor", "compressed-tensors", "transformers", "torch")},
               "variants": []}
    for entry in spec["variants"]:
        out = dict(entry)
        try:
            model = loader.from_pretrained(spec["model"], torch_dtype=torch.float32).eval()
            recipe = modifier(entry, spec["sparsity"], spec["kind"])
            reset_peak()
            before = status_bytes("VmRSS")
            start = time.perf_counter()
            oneshot(model=model, dataset=data, recipe=recipe, num_calibration_samples=len(data),
                    max_seq_length=calib["input_ids"].shape[1], sequential_targets=[block],
                    shuffle_calibration_samples=False)
            out["seconds"] = time.perf_counter() - start
            out["peak_bytes"] = max(0, status_bytes("VmHWM") - before)
            weights = {n + ".weight": m.weight.detach().contiguous() for n, m in model.named_modules()
                       if isinstance(m, torch.nn.Linear)}
            out["weights"] = os.path.join(spec["output"], entry["label"].replace(" ", "_") + ".safetensors")
            save_file(weights, out["weights"])
        except Exception as err:  # reported per modifier; the other modifiers still run
            out["error"] = f"{type(err).__name__}: {err}"
        results["variants"].append(out)
    with open(os.path.join(spec["output"], "peer_results.json"), "w", encoding="utf-8") as handle:
        json.dump(results, handle)


run(sys.argv[1])
