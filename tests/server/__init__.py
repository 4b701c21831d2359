"""Tests of livenotify.server, the console and stats."""
