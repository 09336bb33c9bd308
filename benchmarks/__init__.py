"""Benchmarks of celery-observe: scripts, not tests. Run ``python benchmarks/run.py``."""
