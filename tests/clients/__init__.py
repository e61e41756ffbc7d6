"""Client libraries (netmiko, sshtunnel, scp, ansible-core) through ssh -W.

Run by the ``clients`` tox env; tests/conftest.py leaves this folder out
where the libraries are not installed.
"""
