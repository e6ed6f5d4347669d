"""smc_hf: sparse training and pruning for Hugging Face Transformers (SMC-Bench's algorithms)."""

from .config import SparsityConfig
from .core.masks import MaskSet
from .core.report import SparsityReport, sparsity_report
from .io.mask_file import MASKS_FILE
from .methods import METHODS, SparsityMethod, available_methods
from .pruning.checkpoint_pruning import prune_checkpoint
from .pruning.prune import prune_model
from .training.callbacks import SparsityCallback
from .training.trainer import SparseSeq2SeqTrainer, SparseTrainer
from .version import __version__

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
