"""Registers the hypothesis profiles (see :mod:`fuzz.profiles`) before any
fuzz module builds its settings."""

from fuzz.profiles import register

register()
