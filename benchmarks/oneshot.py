"""One-shot pruning methods side by side: time, peak memory and quality against magnitude, and against llm-compressor.

On the real all-MiniLM-L6-v2 (`minilm`, the `real` extra) and a tiny random Llama, each one-shot method that is
registered (magnitude = `omp` with the uniform distribution, `wanda`, `sparsegpt`) prunes 50% of every selected
weight, unstructured and, where `SparsityConfig` has a `pattern` option, 2:4. Per method:

- time of `prune_model` and its peak memory above the resident memory before it (VmHWM reset), with both as ratios
  to magnitude measured in the same run;
- relative layer-output error ||WX - W'X|| / ||WX|| of every selected Linear, averaged over layers, on held-out
  inputs (CSQA dev questions for MiniLM, random tokens for Llama) that the dense model feeds each layer: each
  layer's input Gram matrix G = sum X^T X is collected once, so ||dW X||^2 = tr(dW G dW^T) needs no stored
  activations;
- the same error with the inputs the pruned model itself feeds each layer (errors of earlier layers included);
- cosine of held-out sentence embeddings to the dense model's (mean pooling over the attention mask, as
  sentence-transformers does for MiniLM).

Calibration is 512 CSQA training questions (MiniLM, `--calibration N`; llm-compressor's default count) or 32
random sequences (Llama). llm-compressor 0.14 pins transformers <= 5.17, so it is installed in its own venv under
`$SMC_HF_CACHE` (default `~/.cache/smc_hf`) on the first run (`--no-peer` skips it); it prunes the same model
folders with the same calibration tokens in `benchmarks/peers/llmcompressor_oneshot.py`, and its pruned weights
are scored here with the same metrics. When the install or the run fails, the benchmark says so and reports
smc_hf alone.

    python benchmarks/oneshot.py            # MiniLM + Llama (hidden 512, 4 layers), with llm-compressor
    python benchmarks/oneshot.py --quick    # fewer sentences, a smaller Llama
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rss import peak_rss, reset_peak, status_bytes  # noqa: E402

SPARSITY = 0.5
CSQA = os.path.join(ROOT, "data", "commonsense", "csqa")
PEER_VERSION = "0.14.0.1"
PEER_TORCH = "2.13.0"
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peers", "llmcompressor_oneshot.py")
# (label, smc_hf method, distribution, pattern); a method or pattern that is not registered is skipped with a note.
VARIANTS = [
    ("magnitude", "omp", "uniform", None),
    ("wanda", "wanda", None, None),
    ("sparsegpt", "sparsegpt", None, None),
    ("magnitude 2:4", "omp", "uniform", "2:4"),
    ("wanda 2:4", "wanda", None, "2:4"),
    ("sparsegpt 2:4", "sparsegpt", None, "2:4"),
]
PEER_VARIANTS = [
    ("llm-compressor magnitude", "MagnitudePruningModifier", "0:0"),
    ("llm-compressor wanda", "WandaPruningModifier", "0:0"),
    ("llm-compressor sparsegpt", "SparseGPTModifier", "0:0"),
    ("llm-compressor wanda 2:4", "WandaPruningModifier", "2:4"),
    ("llm-compressor sparsegpt 2:4", "SparseGPTModifier", "2:4"),
]


def csqa_questions(split: str, n: int) -> list[str]:
    path = os.path.join(CSQA, f"{split}_rand_split.jsonl")
    with open(path, encoding="utf-8") as handle:
        stems = [json.loads(line)["question"]["stem"] for line in handle if line.strip()]
    if len(stems) < n:
        raise ValueError(f"{path} has {len(stems)} questions, {n} needed")
    return stems[:n]


def batches(encoded: dict, batch_size: int) -> list[dict]:
    n = encoded["input_ids"].shape[0]
    return [{k: v[i:i + batch_size] for k, v in encoded.items()} for i in range(0, n, batch_size)]


@dataclasses.dataclass
class Problem:
    """One model and its data: the dense model, the folder it was read from, calibration and held-out batches."""

    name: str
    model: object
    folder: str
    kind: str  # "bert" or "llama": the peer script's model class and sequential block
    calibration: list
    held_out: list


def minilm_problem(quick: bool, calibration: int) -> Problem:
    from transformers import AutoModel, AutoTokenizer

    from tasks.model_aliases import resolve_model_alias

    folder = resolve_model_alias("minilm")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()

    def encode(texts):
        return dict(tokenizer(texts, padding="longest", truncation=True, max_length=64, return_tensors="pt"))

    calib = encode(csqa_questions("train", 64 if quick else calibration))
    held = encode(csqa_questions("dev", 64 if quick else 256))
    return Problem("all-MiniLM-L6-v2", model, folder, "bert", batches(calib, 16), batches(held, 32))


def llama_problem(quick: bool, folder: str) -> Problem:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tasks.tiny import roberta_tokenizer

    hidden, inter, layers = (256, 688, 2) if quick else (512, 1376, 4)
    config = LlamaConfig(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                         num_attention_heads=8, num_key_value_heads=8, vocab_size=4096, max_position_embeddings=256)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    model.save_pretrained(folder)
    roberta_tokenizer(["a tokenizer only so that llm-compressor finds a processor"], folder)
    gen = torch.Generator().manual_seed(1)

    def encode(n):
        ids = torch.randint(0, config.vocab_size, (n, 128), generator=gen)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}

    calib, held = encode(16 if quick else 32), encode(16 if quick else 64)
    return Problem(f"random Llama ({layers}x{hidden})", model, folder, "llama", batches(calib, 8), batches(held, 8))


def selected_linears(model) -> dict:
    """{parameter name: module} of the weights the default selection prunes that belong to an nn.Linear."""
    from torch import nn

    from smc_hf.core.selection import select_parameters

    modules = dict(model.named_modules())
    out = {}
    for name in select_parameters(model):
        module = modules.get(name.rsplit(".", 1)[0])
        if isinstance(module, nn.Linear) and name.endswith(".weight"):
            out[name] = module
    return out


def input_grams(model, held_out: list) -> dict:
    """{weight name: sum of x x^T over the real (unpadded) tokens that reach its Linear}, in float64."""
    import torch

    grams, hooks, mask = {}, [], {}
    for name, module in selected_linears(model).items():
        def hook(_module, args, _out, name=name):
            x = args[0]
            keep = mask["value"].reshape(-1).bool()
            x = x.reshape(-1, x.shape[-1])[keep].double()
            grams[name] = grams.get(name, 0) + x.T @ x
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for batch in held_out:
                mask["value"] = batch["attention_mask"]
                model(**batch)
    finally:
        for h in hooks:
            h.remove()
    return grams


def layer_error(dense_weights: dict, pruned_weights: dict, grams: dict) -> float:
    """Mean over layers of ||(W - W') X|| / ||W X||, from the input Gram matrices (of the dense model's inputs,
    or of the pruned model's own, which is what a sequential SparseGPT reconstructs)."""
    errors = []
    for name, gram in grams.items():
        w = dense_weights[name].double()
        dw = w - pruned_weights[name].double()
        errors.append(float(((dw @ gram) * dw).sum().clamp_min(0).sqrt() / ((w @ gram) * w).sum().sqrt()))
    return sum(errors) / len(errors)


def embeddings(model, held_out: list):
    import torch

    out = []
    with torch.no_grad():
        for batch in held_out:
            hidden = model(**batch, output_hidden_states=True).hidden_states[-1]
            m = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append((hidden * m).sum(1) / m.sum(1).clamp_min(1))
    return torch.cat(out)


def mean_cosine(a, b) -> float:
    import torch

    return float(torch.nn.functional.cosine_similarity(a, b, dim=-1).mean())


def pruned_fraction(weights: dict, names) -> float:
    total = sum(weights[n].numel() for n in names)
    return sum(int((weights[n] == 0).sum()) for n in names) / total


def off_target(weights: dict, names) -> int:
    """Zeros found minus the exact target (round(s * n) per layer), summed over layers: 0 when counts are exact."""
    return sum(int((weights[n] == 0).sum()) - round(SPARSITY * weights[n].numel()) for n in names)


def nm_exact(weights: dict, names, n: int = 2, m: int = 4) -> bool:
    """Every group of `m` consecutive inputs of every row holds at least `m - n` zeros."""
    for name in names:
        w = weights[name]
        if w.shape[-1] % m:
            return False
        if int(((w.reshape(-1, m) == 0).sum(-1) < m - n).sum()):
            return False
    return True


def smc_variants() -> tuple[list, list[str]]:
    from smc_hf import SparsityConfig
    from smc_hf.methods import METHODS

    fields = {f.name for f in dataclasses.fields(SparsityConfig)}
    runnable, notes = [], []
    for label, method, distribution, pattern in VARIANTS:
        if method not in METHODS:
            notes.append(f"{label}: skipped, method {method!r} is not registered in this smc_hf")
        elif pattern and "pattern" not in fields:
            notes.append(f"{label}: skipped, SparsityConfig has no `pattern` option in this smc_hf")
        else:
            runnable.append((label, method, distribution, pattern))
    return runnable, notes


def run_smc(problem: Problem, grams: dict, dense_emb, variant) -> dict:
    from smc_hf import SparsityConfig, prune_model

    label, method, distribution, pattern = variant
    kwargs = {"method": method, "sparsity": SPARSITY}
    if distribution and not pattern:  # a pattern fixes every layer's sparsity; a distribution with it is an error
        kwargs["distribution"] = distribution
    if pattern:
        kwargs["pattern"] = pattern
    model = copy.deepcopy(problem.model)
    reset_peak()
    before = status_bytes("VmRSS")
    start = time.perf_counter()
    prune_model(model, SparsityConfig(**kwargs), dataloader=problem.calibration)
    seconds = time.perf_counter() - start
    peak = max(0, peak_rss() - before)
    return score(problem, grams, dense_emb, label, model, seconds, peak, pattern)


def score(problem, grams, dense_emb, label, model, seconds, peak, pattern) -> dict:
    dense = {n: m.weight.detach() for n, m in selected_linears(problem.model).items()}
    pruned = {n: m.weight.detach() for n, m in selected_linears(model).items()}
    row = {
        "model": problem.name, "method": label, "seconds": seconds, "peak_mb": peak / 2**20,
        "layer_error_own_inputs": layer_error(dense, pruned, input_grams(model, problem.held_out)),
        "model_mb": sum(p.numel() * p.element_size() for p in problem.model.parameters()) / 2**20,
        "pruned": pruned_fraction(pruned, list(grams)), "off_target": off_target(pruned, list(grams)),
        "layer_error": layer_error(dense, pruned, grams),
        "cosine": mean_cosine(dense_emb, embeddings(model, problem.held_out)),
    }
    if pattern:
        row["nm_exact"] = nm_exact(pruned, list(grams))
    return row


# -- llm-compressor in its own venv --------------------------------------------------------------------------------
def cache_dir() -> str:
    return os.environ.get("SMC_HF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "smc_hf")


def peer_python(log) -> Optional[str]:
    """The python of a venv holding llm-compressor, created once (renamed into place when the install succeeded)."""
    venv = os.path.join(cache_dir(), f"llmcompressor-{PEER_VERSION}-venv")
    python = os.path.join(venv, "bin", "python")
    if os.path.isfile(python):
        return python
    staging = venv + ".partial"
    log(f"installing llmcompressor=={PEER_VERSION} torch=={PEER_TORCH} into {venv} (once; a few minutes)")
    try:
        subprocess.run([sys.executable, "-m", "venv", "--clear", staging], check=True, capture_output=True,
                       timeout=300)
        done = subprocess.run([os.path.join(staging, "bin", "python"), "-m", "pip", "install", "-q",
                               f"llmcompressor=={PEER_VERSION}", f"torch=={PEER_TORCH}"],
                              capture_output=True, text=True, timeout=3600)
    except (OSError, subprocess.SubprocessError) as err:
        log(f"llm-compressor: skipped, the venv could not be created ({err})")
        return None
    if done.returncode != 0:
        log("llm-compressor: skipped, pip failed: " + (done.stderr.strip().splitlines() or ["?"])[-1])
        return None
    os.replace(staging, venv)
    return python


def run_peer(problem: Problem, grams: dict, dense_emb, python: str, work: str, quick: bool, log) -> list[dict]:
    import torch
    from safetensors.torch import load_file, save_file

    calib = {k: torch.cat([b[k] for b in problem.calibration]).contiguous() for k in ("input_ids", "attention_mask")}
    save_file(calib, os.path.join(work, "calibration.safetensors"))
    spec = {"model": problem.folder, "kind": problem.kind, "calibration": os.path.join(work, "calibration.safetensors"),
            "sparsity": SPARSITY, "output": work,
            "variants": [{"label": l, "modifier": m, "mask_structure": s} for l, m, s in PEER_VARIANTS]}
    spec_path = os.path.join(work, "spec.json")
    with open(spec_path, "w", encoding="utf-8") as handle:
        json.dump(spec, handle)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([python, PEER_SCRIPT, spec_path], capture_output=True, text=True, env=env,
                          timeout=1800)
    if done.returncode != 0:
        log(f"llm-compressor on {problem.name}: failed: " + "\n".join(done.stderr.strip().splitlines()[-5:]))
        return []
    with open(os.path.join(work, "peer_results.json"), encoding="utf-8") as handle:
        results = json.load(handle)
    rows = []
    for entry in results["variants"]:
        if "error" in entry:
            log(f"{entry['label']} on {problem.name}: {entry['error']}")
            continue
        model = copy.deepcopy(problem.model)
        weights = load_file(entry["weights"])
        state = model.state_dict()
        missing = [n for n in grams if n not in weights]
        if missing:
            log(f"{entry['label']}: weights missing from its output: {missing[:3]}")
            continue
        with torch.no_grad():
            for n in weights:
                if n in state:
                    state[n].copy_(weights[n])
        pattern = "2:4" if entry["mask_structure"] == "2:4" else None
        row = score(problem, grams, dense_emb, entry["label"], model, entry["seconds"], entry["peak_bytes"], pattern)
        row["versions"] = results["versions"]
        rows.append(row)
    return rows


def table(rows: list[dict]) -> tuple[list[str], list[list]]:
    columns = ["model", "method", "layer error", "layer error (own inputs)", "cosine", "pruned", "zeros - target",
               "2:4 exact", "seconds", "x magnitude", "peak MB", "x magnitude (mem)", "model MB"]
    body = []
    for r in rows:
        base = next((b for b in rows if b["model"] == r["model"] and b["method"] == "magnitude"), None)
        body.append([
            r["model"], r["method"], round(r["layer_error"], 4), round(r["layer_error_own_inputs"], 4),
            round(r["cosine"], 4), round(r["pruned"], 4), r["off_target"],
            {True: "yes", False: "NO"}.get(r.get("nm_exact"), "-"), round(r["seconds"], 3),
            round(r["seconds"] / base["seconds"], 2) if base else "-", round(r["peak_mb"], 1),
            round(r["peak_mb"] / base["peak_mb"], 2) if base and base["peak_mb"] > 0 else "-", round(r["model_mb"], 1),
        ])
    return columns, body


def markdown(columns: list[str], body: list[list]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in body]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sentences and a smaller Llama")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--no-peer", action="store_true", help="skip llm-compressor")
    parser.add_argument("--calibration", type=int, default=512,
                        help="CSQA training questions calibrating MiniLM (512: llm-compressor's default count)")
    parser.add_argument("--models", default="minilm,llama", help="comma-separated: minilm, llama")
    opts = parser.parse_args(argv)

    import torch

    torch.manual_seed(0)
    notes: list[str] = []

    def log(message: str) -> None:
        print(message, flush=True)
        notes.append(message)

    variants, skipped = smc_variants()
    for line in skipped:
        log(line)
    python = None if opts.no_peer else peer_python(log)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="smc-oneshot-bench-") as work:
        problems = []
        for name in opts.models.split(","):
            if name == "minilm":
                try:
                    problems.append(minilm_problem(opts.quick, opts.calibration))
                except Exception as err:  # the alias error says which extra installs the model
                    log(f"MiniLM: skipped ({err})")
            elif name == "llama":
                problems.append(llama_problem(opts.quick, os.path.join(work, "llama")))
            else:
                parser.error(f"unknown model {name!r}; choose minilm or llama")
        for problem in problems:
            print(f"== {problem.name}", flush=True)
            grams = input_grams(problem.model, problem.held_out)
            dense_emb = embeddings(problem.model, problem.held_out)
            for variant in variants:
                try:
                    rows.append(run_smc(problem, grams, dense_emb, variant))
                except (ValueError, TypeError, RuntimeError, KeyError) as err:
                    log(f"{variant[0]} on {problem.name}: failed: {err}")
                    continue
                print(f"  {rows[-1]['method']}: error {rows[-1]['layer_error']:.4f} cosine {rows[-1]['cosine']:.4f} "
                      f"{rows[-1]['seconds']:.3f} s", flush=True)
            if python:
                peer_work = os.path.join(work, f"peer-{problem.kind}")
                os.makedirs(peer_work)
                for row in run_peer(problem, grams, dense_emb, python, peer_work, opts.quick, log):
                    rows.append(row)
                    print(f"  {row['method']}: error {row['layer_error']:.4f} cosine {row['cosine']:.4f} "
                          f"{row['seconds']:.3f} s", flush=True)
    columns, body = table(rows)
    print()
    print(markdown(columns, body))
    for line in notes:
        print(f"note: {line}")
    if opts.json:
        headline = []
        for r in rows:
            if r["model"].startswith("all-MiniLM") and not r["method"].startswith("llm-compressor"):
                headline.append({"name": f"MiniLM {r['method']}: layer error", "value": round(r["layer_error"], 4)})
                headline.append({"name": f"MiniLM {r['method']}: embedding cosine", "value": round(r["cosine"], 4)})
        out = {"title": f"one-shot pruning at {SPARSITY:.0%} and 2:4: quality, time and peak memory vs magnitude "
                        "and llm-compressor", "headline": headline,
               "tables": [{"title": "per model and method", "columns": columns, "rows": body}],
               "rows": rows, "notes": notes, "torch": torch.__version__}
        with open(opts.json, "w", encoding="utf-8") as handle:
            json.dump(out, handle, indent=1)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
