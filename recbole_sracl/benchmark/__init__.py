"""Benchmark harnesses: model comparison over seeds and training speed."""
