"""SMC-Bench's algorithms, registered by name. Importing this package registers all of them."""

from . import activation_aware, gradual, lth, obert, one_shot, rigl, snip  # noqa: F401  (registration side effects)
from .base import SparsityMethod
from .one_shot import DENSE_METHOD
from .registry import METHODS


def available_methods() -> list[str]:
    return METHODS.names()


def build_method(config) -> SparsityMethod:
    return METHODS.get(config.method)(config)


__all__ = ["DENSE_METHOD", "METHODS", "SparsityMethod", "available_methods", "build_method"]
