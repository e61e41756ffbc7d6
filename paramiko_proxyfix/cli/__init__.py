"""Operator tools: ``python -m paramiko_proxyfix demo|check|ps|run``.

The core (what a patched paramiko carries) never imports this subpackage.
"""
