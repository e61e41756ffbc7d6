"""Test suite for paramiko-proxyfix (a package so helpers import as tests.support)."""
