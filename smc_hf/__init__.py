"""smc_hf: sparse training and pruning for Hugging Face Transformers (SMC-Bench's algorithms)."""

from .config import SparsityConfig
from .masks import MASKS_FILE, MaskSet
from .methods import METHODS, SparsityMethod, available_methods
from .prune import prune_model
from .report import SparsityReport, sparsity_report
from .version import __version__

from .callbacks import SparsityCallback  # noqa: E402  (imports transformers)
from .trainer import SparseSeq2SeqTrainer, SparseTrainer  # noqa: E402
from .checkpoint_pruning import prune_checkpoint  # noqa: E402

__all__ = [
    "MASKS_FILE",
    "METHODS",
    "MaskSet",
    "SparseSeq2SeqTrainer",
    "SparseTrainer",
    "SparsityCallback",
    "SparsityConfig",
    "SparsityMethod",
    "SparsityReport",
    "__version__",
    "available_methods",
    "prune_checkpoint",
    "prune_model",
    "sparsity_report",
]
