"""LipSync benchmarks: load generation, backend matrix, measured cost and speedup tables."""
