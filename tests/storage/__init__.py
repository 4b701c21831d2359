"""Tests of storage (livenotify.storage and storage_proc)."""
