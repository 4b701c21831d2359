"""Tests of the wire protocol (livenotify.protocol)."""
