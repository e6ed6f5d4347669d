"""The registry of sparse methods, by the benchmark's names."""

from ..registry import Registry

METHODS: Registry = Registry("sparsity method")
