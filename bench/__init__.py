"""Benchmarks: each module has ``run(smoke: bool) -> dict`` and prints JSON as a script."""
