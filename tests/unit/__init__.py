"""The fast unit suite: no root, no sshd, no Redis, no network (under a minute).

``pytest tests/unit``. Real short-lived processes (``sh``, ``sleep``, ``cat``)
where a process is the thing under test, fake /proc trees in ``tmp_path``
where parsing is.
"""
