"""Measuring heads: FLOPs and parameters (the paper's tables), and the benchmark runner behind
``tools/benchmark.py``."""
