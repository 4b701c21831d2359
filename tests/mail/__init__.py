"""Tests of e-mail dispatch and the embedded worker."""
