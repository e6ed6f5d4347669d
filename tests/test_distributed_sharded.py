"""FSDP1 (use_orig_params) and FSDP2 placements on two CPU processes over gloo, mask agreement, and the cost
of keeping a fixed mask (how often weights and optimizer state are re-masked) under DDP, FSDP2 and FSDP1.

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
    check(torch_run("distributed_shard_driver.py", [str(out), "fsdp2", "fsdp1", "agree", "upkeep"]))

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
        assert record["dense_report"] == {"numel": 4096, "zeros": 0, "target": 0.0}  # full size, not the shard
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


UPKEEP_STEPS = 6


@pytest.mark.parametrize("backend, placement", [("ddp", None), ("fsdp2", "dtensor"), ("fsdp1", "fsdp1")])
def test_a_fixed_mask_is_not_reapplied_between_changes_yet_stays_exact(records, backend, placement):
    """AdamW keeps a zero weight with a masked (zero) gradient and zero moments at zero, so after the masks
    are applied once at the start, each step masks only the gradients; zeros are checked in what each rank holds."""
    ranks = [r[f"{backend}/adamw"] for r in records("upkeep")]
    assert ranks[0]["digest"] == ranks[1]["digest"]
    for record in ranks:
        assert record["placement"] == placement
        assert record["steps"] == UPKEEP_STEPS
        assert record["counts"] == {"apply_to_weights": 1, "apply_to_optimizer": 1, "apply_to_grads": UPKEEP_STEPS}
        assert record["pruned"] == record["numel"] // 2
        assert record["pruned_nonzero_local"] == 0
        assert record["moments_nonzero_local"] == 0


@pytest.mark.parametrize("backend", ["ddp", "fsdp2", "fsdp1"])
def test_an_optimizer_that_moves_zeros_is_remasked_after_every_step(records, backend):
    """An optimizer outside torch's elementwise ones (here: one that shifts every entry) gets weights and state
    re-masked after each step, and the zeros hold."""
    for record in (r[f"{backend}/shifting_sgd"] for r in records("upkeep")):
        assert record["counts"] == {
            "apply_to_weights": 1 + UPKEEP_STEPS, "apply_to_optimizer": 1 + UPKEEP_STEPS, "apply_to_grads": UPKEEP_STEPS,
        }
        assert record["pruned_nonzero_local"] == 0
        assert record["moments_nonzero_local"] == 0
