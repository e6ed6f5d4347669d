"""Console scripts: smc-prune, smc-bench."""
