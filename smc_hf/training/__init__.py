"""The Trainer side: `SparsityCallback`, `SparseTrainer`, best-model reloading. The only code importing `Trainer`."""
