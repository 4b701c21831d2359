"""Tests of tasks/ (the Celery mail tasks)."""
