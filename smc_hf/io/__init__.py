"""Bytes on disk: mask files, sparse folders, the compressed form, model cards, atomic writes.

The bottom layer: nothing here imports any other part of smc_hf (only `smc_hf.version`).
"""
