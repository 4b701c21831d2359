"""Tests of the terminal client and the Publisher."""
