"""benchmarks/semi_structured.py: 2:4 kernels against dense where CUDA exists; a stated skip where it does not."""

import importlib.util
import json
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench():
    path = os.path.join(ROOT, "benchmarks", "semi_structured.py")
    spec = importlib.util.spec_from_file_location("semi_structured", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_four_mask_keeps_the_two_largest_of_every_four_inputs():
    weight = torch.tensor([[0.1, -3.0, 2.0, 0.5, 4.0, -0.2, 0.3, -5.0]])
    assert _bench().two_four_mask(weight).tolist() == [[False, True, True, False, True, False, False, True]]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the skip path is for machines without CUDA")
def test_without_cuda_it_says_nothing_was_measured(tmp_path, capsys):
    out = tmp_path / "semi.json"
    assert _bench().main(["--quick", "--json", str(out)]) == 0
    assert "not measured" in capsys.readouterr().out
    assert json.loads(out.read_text())["skipped"] == "no CUDA device: not measured"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch's semi-structured sparse kernels need CUDA")
def test_sparse_kernels_compute_the_dense_model_with_zeros(tmp_path):
    out = tmp_path / "semi.json"
    assert _bench().main(["--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["dense_ms"] > 0 and result["sparse_ms"] > 0
    assert result["max_abs_difference"] <= 2e-2 * result["max_abs_output"]
