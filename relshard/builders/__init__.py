"""Benchmark builders: leak-free splits, benchmark manifests and the evaluation metrics."""
