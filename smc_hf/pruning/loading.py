"""Loading models the way their folders say: the transformers class to build, and compressed folders."""

from __future__ import annotations

from typing import Optional

from ..io.compressed import load_compressed_state_dict


def model_class_for(config, name: Optional[str] = None):
    """The transformers class to build a model with: `name` (an `AutoModel*` or model class exported by
    transformers), else the saved `architectures[0]` when transformers exports it, else `AutoModel`.

    Only transformers' own namespace is consulted, so no name in a config can import other code.
    """
    import transformers

    if name:
        cls = getattr(transformers, name, None) if name.isidentifier() else None
        if not isinstance(cls, type) or not hasattr(cls, "from_pretrained") or not (
            name.startswith("AutoModel") or issubclass(cls, transformers.PreTrainedModel)
        ):
            raise ValueError(f"model class {name!r} is not an AutoModel* or model class of transformers")
        return cls
    for arch in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, arch, None) if isinstance(arch, str) and arch.isidentifier() else None
        if isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel):
            return cls
    return transformers.AutoModel


def from_compressed(folder: str, model_class=None, **kwargs):
    """Load a compressed folder as a dense transformers model (`model_class` defaults to the saved class).

    The weights go through `from_pretrained(None, config=..., state_dict=...)`, transformers' own loading.
    """
    from transformers import AutoConfig

    trust = kwargs.get("trust_remote_code", False)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust)
    cls = model_class_for(config, model_class)
    state = load_compressed_state_dict(folder)
    model = cls.from_pretrained(None, config=config, state_dict=state, **kwargs)
    model.name_or_path = folder
    return model
