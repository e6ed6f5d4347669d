"""FSDP1 (use_orig_params) and FSDP2 placements on two CPU processes over gloo, and mask agreement.

Accelerate's FSDP plugin needs GPUs, so the driver wraps the model itself and replays the Trainer's events
through `SparsityCallback`; the placements, collectives and masks are the ones a GPU run uses.
"""

from __future__ import annotations

import json

import pytest

from tests.distributed_launch import check, torch_run


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharded")
    check(torch_run("distributed_shard_driver.py", [str(out), "fsdp2", "fsdp1", "agree"]))

    def read(mode):
        result = []
        for rank in (0, 1):
            with open(out / f"{mode}-rank-{rank}.json") as handle:
                result.append(json.load(handle))
        return result

    return read


@pytest.mark.parametrize("mode, placement", [("fsdp2", "dtensor"), ("fsdp1", "fsdp1")])
def test_sharded_training_keeps_masks_exact(records, mode, placement):
    ranks = records(mode)
    assert [r["num_processes"] for r in ranks] == [2, 2]
    first = ranks[0]
    assert first["names"][0] == "roberta.encoder.layer.0.attention.self.query.weight"  # clean names, no wrappers
    assert first["numel"] == 4096 and first["pruned"] == 2048
    assert ranks[0]["digest"] == ranks[1]["digest"]
    # each rank masks only its shard, and the shards cover every selected weight once
    assert sum(r["local_mask_numel"] for r in ranks) == first["numel"]
    assert all(0 < r["local_mask_numel"] < first["numel"] for r in ranks)
    for record in ranks:
        assert record["placement"] == placement
        assert record["steps"] == 6
        assert record["pruned_nonzero_local"] == 0
        assert record["moments_nonzero_local"] == 0
        assert record["pruned_nonzero_full"] == 0
        assert record["weight_zeros"] == 2048
        # every rank saw the same batch, so sharding changes nothing: same masks, same weights as unsharded
        assert record["reference_digest"] == record["digest"]
        assert record["max_weight_difference"] < 1e-5


def test_disagreeing_masks_are_detected_and_replaced_by_rank_0s(records):
    ranks = records("agree")
    for record in ranks:
        assert record["equal_before"]
        assert record["raised"] == "sparsity masks differ between ranks: ranks [1] disagree with rank 0"
        assert record["equal_after"]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    assert ranks[0]["weights_sum"] == ranks[1]["weights_sum"]
