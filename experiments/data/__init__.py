"""Data for the experiments: synthetic Criteo-shaped data and real Criteo TSV files (``torchrec`` ``Batch``es),
synthetic and file item catalogs (event logs with content embeddings)."""
