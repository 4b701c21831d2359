"""Tests of the hub: registry, delivery, coalescing."""
