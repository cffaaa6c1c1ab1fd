"""Benchmarks of streamproc against its baselines on one topic's contents (``make bench``)."""
