"""The registry of sparse methods, by the benchmark's names; each method class's `name` is set to its own."""

from ..core.registry import Registry

METHODS: Registry = Registry("sparsity method", name_attr="name")
