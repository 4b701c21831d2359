"""Tests of the transports and WebSocket/TCP liveness."""
