"""What happens to this process's proxies at fork and at exit: one sequence each.

After fork, in the child (Celery's prefork pool, ``multiprocessing``,
Fabric 1's parallel mode), only the forking thread exists: locks other
threads held stay held, and their threads are gone. So, in this order:

1. a child that the spawner thread forked is a proxy about to exec: nothing;
2. the spawner (spawn.py) and the pipe budget (pipesize.py) start afresh:
   their locks are needed by step 3;
3. the registry starts afresh (its lock, counters and idle reaper) and lets
   go of every inherited proxy: it closes this process's copies of the pipes
   and signals nothing, since the proxies are the parent's.

At exit, when the interpreter (or a sub-interpreter) shuts its threads down:
every proxy gets SIGTERM before any is waited for (registry.close_all), then
our threads end, so none keeps a sub-interpreter from ending.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading

from . import pipesize, registry, spawn

__all__ = ["after_fork_in_child", "at_exit", "register"]

_registered = False


def after_fork_in_child() -> None:
    if spawn.forked_for_exec():
        return
    spawn.reset_after_fork()
    pipesize.reset_after_fork()
    registry.reset_after_fork()
    registry.release_inherited()


def at_exit() -> None:
    """Close every proxy at once, then end our threads."""
    registry.close_all()
    registry.wake_reaper(join=1.0)
    spawn.stop_spawner()


def register() -> None:
    """Install the fork and exit hooks, once per interpreter."""
    global _registered
    if _registered:
        return
    _registered = True
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=after_fork_in_child)
    # threading's own exit hooks run when the interpreter, or a
    # sub-interpreter, shuts its threads down: before our threads would keep
    # it from ending.
    hook = getattr(threading, "_register_atexit", None)
    if hook is not None:
        with contextlib.suppress(RuntimeError):  # already shutting down
            hook(at_exit)
    atexit.register(at_exit)
