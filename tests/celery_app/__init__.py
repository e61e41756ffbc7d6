"""A small Celery app (``app.py``) and helpers for the worker-lifecycle tests.

Kept free of Celery imports so that the Fabric 1 environment, which has no
Celery, can use the helpers.
"""
