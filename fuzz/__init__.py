"""Hypothesis property and stateful tests of the livenotify wire protocol.

A package so its modules import each other and ``tests.helpers`` the same way
under ``pytest`` and ``pytest fuzz``.
"""
