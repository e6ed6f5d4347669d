"""Size on disk of the bitmask-compressed format vs the dense sparse checkpoint, at 50% and 90% sparsity.

One process, one BERT-base-shaped model (random init; sizes do not depend on the values) pruned with global
OMP, saved twice per sparsity and dtype: dense with exact zeros (the baseline, what `from_pretrained`
reads) and compressed (kept values + 1 bit per selected weight). Prints the ratio of the weight files and
of the selected weights alone (embeddings, norms and biases stay dense in both), next to the ideal
(1 - s) + 1/(8 * bytes per value); checks the compressed folder restores the model exactly.

    python benchmarks/compressed_size.py            # BERT-base shape (110M weights), fp32 and bf16
    python benchmarks/compressed_size.py --quick    # a 4-layer, 256-wide model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
from transformers import BertConfig, BertModel  # noqa: E402

from smc_hf import SparsityConfig, prune_model  # noqa: E402
from smc_hf.pruning.sparse_folder import save_sparse_pretrained  # noqa: E402
from smc_hf.io.compressed import COMPRESSED_INDEX, load_compressed_state_dict  # noqa: E402
from smc_hf.io.safetensors_io import read_header  # noqa: E402

SPARSITIES = (0.5, 0.9)


def _weight_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)
               if n.endswith(".safetensors") and n.startswith("model"))


def _selected_bytes(folder: str, names: set[str]) -> int:
    total = 0
    for file in os.listdir(folder):
        if file.endswith(".safetensors") and file.startswith("model"):
            infos, _ = read_header(os.path.join(folder, file))
            total += sum(i.nbytes for i in infos if i.name.rsplit(".", 1)[0] in names or i.name in names)
    return total


def measure(config: BertConfig, dtype: torch.dtype, sparsity: float, work: str) -> dict:
    torch.manual_seed(0)
    model = BertModel(config).to(dtype)
    masks = prune_model(model, SparsityConfig(method="omp", sparsity=sparsity))
    dense_dir, packed_dir = os.path.join(work, "dense"), os.path.join(work, "compressed")
    save_sparse_pretrained(model, dense_dir, masks, overwrite=True)
    save_sparse_pretrained(model, packed_dir, masks, compress=True, overwrite=True)
    state = load_compressed_state_dict(packed_dir)
    exact = all(torch.equal(state[n], p) for n, p in model.state_dict().items())
    selected = set(masks.names)
    bytes_per_value = torch.empty((), dtype=dtype).element_size()
    result = {
        "dtype": str(dtype).replace("torch.", ""),
        "sparsity": sparsity,
        "dense_bytes": _weight_bytes(dense_dir),
        "compressed_bytes": _weight_bytes(packed_dir),
        "dense_selected_bytes": _selected_bytes(dense_dir, selected),
        "compressed_selected_bytes": _selected_bytes(packed_dir, selected),
        "selected_fraction": masks.numel() / sum(p.numel() for p in model.parameters()),
        "ideal_selected_ratio": (1 - sparsity) + 1 / (8 * bytes_per_value),
        "exact": exact,
        "index_present": os.path.isfile(os.path.join(packed_dir, COMPRESSED_INDEX)),
    }
    result["ratio"] = result["compressed_bytes"] / result["dense_bytes"]
    result["selected_ratio"] = result["compressed_selected_bytes"] / result["dense_selected_bytes"]
    shutil.rmtree(dense_dir)
    shutil.rmtree(packed_dir)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 4-layer, 256-wide model")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if args.quick:
        config = BertConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    else:
        config = BertConfig()  # bert-base-uncased's shape
    work = tempfile.mkdtemp(prefix="smc_compressed_bench_")
    results = []
    try:
        for dtype in (torch.float32, torch.bfloat16):
            for sparsity in SPARSITIES:
                result = measure(config, dtype, sparsity, work)
                results.append(result)
                print(f"  {result['dtype']} {sparsity:.0%}: {result['ratio']:.3f} of the dense weight files", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    columns = ["dtype", "sparsity", "dense MB", "compressed MB", "file ratio", "selected-weights ratio", "ideal", "exact"]
    rows = [[r["dtype"], r["sparsity"], round(r["dense_bytes"] / 1e6, 2), round(r["compressed_bytes"] / 1e6, 2),
             round(r["ratio"], 3), round(r["selected_ratio"], 3), round(r["ideal_selected_ratio"], 3), r["exact"]]
            for r in results]
    print()
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(x) for x in row) + " |")
    print(f"\nselected weights: {results[0]['selected_fraction']:.1%} of all weights (the rest stays dense)")
    fp32 = {r["sparsity"]: r for r in results if r["dtype"] == "float32"}
    figures = {
        "title": f"Compressed (values + bitmask) vs dense sparse checkpoint, "
                 f"{'quick 4x256' if args.quick else 'BERT-base'} shape",
        "headline": [
            {"name": f"compressed / dense weight file, fp32, {s:.0%} sparse", "value": round(fp32[s]["ratio"], 3),
             "unit": "x"} for s in SPARSITIES
        ] + [{"name": "restored exactly", "value": all(r["exact"] for r in results)}],
        "tables": [{"title": "sizes", "columns": columns, "rows": rows}],
        "results": results,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0 if all(r["exact"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
