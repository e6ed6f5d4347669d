"""Pruning without training: `prune_model`, checkpoint pruning (in memory or streaming), sparse folders."""
