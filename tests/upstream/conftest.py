"""Run paramiko's test_proxy.py, as patches/ give it to paramiko, against
this package: ``import paramiko_proxyfix`` has installed the shim on an
unpatched paramiko, or filled in the override points of a patched one."""

import paramiko_proxyfix

if not paramiko_proxyfix.is_installed():
    raise RuntimeError("tests/upstream needs paramiko_proxyfix installed")
