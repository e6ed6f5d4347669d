"""Adding a method is one new file plus its registration.

`KeepLargest` below is such a file (it would sit at smc_hf/methods/keep_largest.py, imported by
smc_hf/methods/__init__.py): it declares its facts, and the config, `prune_model`, streaming pruning, the
benchmark grid, its legends and the sparsity report take them from it, with no edit anywhere else.
"""

import pytest

from smc_hf import SparsityConfig, prune_model, sparsity_report
from smc_hf.bench.grid import MethodSpec
from smc_hf.bench.names import legend_names, legend_rank, method_style
from smc_hf.core.context import PruneContext
from smc_hf.io.mask_file import MASKS_FILE, read_masks
from smc_hf.methods import METHODS, SparsityMethod
from smc_hf.methods.base import Legend
from smc_hf.pruning.streaming import prune_checkpoint_streaming
from tests.helpers import tiny_roberta


class KeepLargest(SparsityMethod):
    """Magnitude pruning before training, spread evenly over layers."""

    timing = "before"
    default_distribution = "uniform"
    one_shot_capable = True
    streaming_criterion = "magnitude"
    legend = Legend("Keep-largest (Before)", 100, "#123456", "d")

    def on_round_begin(self, ctx: PruneContext) -> None:
        self.prune_to(ctx, self.config.sparsity)

    one_shot = on_round_begin


@pytest.fixture
def keep_largest():
    METHODS.register("keep_largest")(KeepLargest)
    yield "keep_largest"
    METHODS._items.pop("keep_largest")


def test_a_registered_method_reaches_every_layer(keep_largest, tmp_path):
    config = SparsityConfig(method=keep_largest, sparsity=0.5)
    assert config.method_class is KeepLargest

    model = tiny_roberta()
    masks = prune_model(model, config)
    for name, param in masks.params.items():  # uniform: every selected layer at exactly half
        assert int((param == 0).sum()) == round(0.5 * param.numel()), name
    assert sparsity_report(model, masks=masks, config=config).target == 0.5

    source = tmp_path / "source"
    tiny_roberta().save_pretrained(source)
    report = prune_checkpoint_streaming(str(source), str(tmp_path / "out"), config, progress=False)
    assert report.achieved == pytest.approx(0.5, abs=1e-3)
    for name, mask in read_masks(str(tmp_path / "out" / MASKS_FILE)).items():
        assert int((~mask).sum()) == round(0.5 * mask.numel()), name

    spec = MethodSpec.parse(keep_largest)
    assert spec.legend == "Keep-largest (Before)"
    assert list(legend_names())[-1] == keep_largest
    assert legend_rank(keep_largest) == (len(legend_names()) - 1, "")
    assert method_style(keep_largest) == ("#123456", "d")


def test_a_method_must_declare_the_step_events_it_overrides():
    with pytest.raises(TypeError, match=r"overrides \['after_optimizer_step'\] without listing them"):
        class Silent(SparsityMethod):
            def after_optimizer_step(self, ctx):
                pass

    class Declared(SparsityMethod):
        events = frozenset({"after_optimizer_step"})

        def after_optimizer_step(self, ctx):
            pass

    assert Declared.events == {"after_optimizer_step"}


def test_unregistered_after_the_test():
    assert "keep_largest" not in METHODS
