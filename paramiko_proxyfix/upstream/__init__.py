"""The fix as paramiko would merge it: ``proxy.py`` and the exceptions for
``ssh_exception.py``, in paramiko's own idiom (see tools/make_patches.py)."""
