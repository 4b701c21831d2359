"""Benchmarks of livenotify against a ``websockets`` peer: ``python -m benchmarks``."""
