"""Run paramiko's test_proxy.py, as patches/ give it to paramiko, against
this package: ``import paramiko_proxyfix`` has installed the shim on an
unpatched paramiko, or filled in the override points of a patched one."""

import pytest

import paramiko_proxyfix


@pytest.fixture(autouse=True)
def shim_installed():
    # A test elsewhere in the suite may have uninstalled it and not put it
    # back: these tests are about the fix as the package serves it.
    if not paramiko_proxyfix.is_installed():
        paramiko_proxyfix.install()
    assert paramiko_proxyfix.is_installed()
    yield
