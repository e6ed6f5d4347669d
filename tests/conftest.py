"""Test-wide settings: offline Hub, quiet logs, one thread (CI has two cores)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The benchmark's tasks reach smc_hf through the `smc_hf.tasks` entry point once the repository is installed
# (`pip install -e .`); the tests register them directly, so they need no installed metadata.
import tasks  # noqa: E402
from smc_hf.pruning.task_source import register_task_provider  # noqa: E402

register_task_provider(tasks)
