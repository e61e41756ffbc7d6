# paramiko's proxy.py with the fix, in its idiom (tools/make_patches.py).

import os
import select
import shlex
import signal
import socket
import threading
import time

# Try-and-ignore import so platforms w/o subprocess (eg Google App Engine) can
# still import paramiko.
subprocess, subprocess_import_error = None, None
try:
    import subprocess
except ImportError as e:
    subprocess_import_error = e

from paramiko.ssh_exception import ProxyCommandFailure
from paramiko.util import ClosingContextManager

from .ssh_exception import ProxyCommandClosed, ProxyCommandExited

_SLICE = 0.25  # the longest wait: a close() in another thread is seen
_pid = os.getpid()  # recv() on each idle tick compares: no system call


def _after_fork():
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork()
    os.register_at_fork(after_in_child=_after_fork)


class ProxyCommand(ClosingContextManager):
    """
    Wraps a subprocess running ProxyCommand-driven programs.

    This class implements a the socket-like interface needed by the
    `.Transport` and `.Packetizer` classes. Using this class instead of a
    regular socket makes it possible to talk with a Popen'd command that will
    proxy traffic between the client and a server hosted in another machine.

    At the end of its output, `recv` gives ``b""`` for exit status 0 (or
    while it runs), else raises `.ProxyCommandExited`. `close` reaps it.

    Instances of this class may be used as context managers.
    """

    #: Seconds `close` waits after SIGTERM, and again after SIGKILL.
    close_timeout = 0.5
    #: Seconds to wait for the exit status once the command's output ends.
    eof_timeout = 0.2
    #: How many bytes of the command's stderr to keep for error messages.
    stderr_limit = 4096

    def __init__(self, command_line):
        """
        Create a new CommandProxy instance. The instance created by this
        class can be passed as an argument to the `.Transport` class.

        :param str command_line:
            the command that should be executed and used as the proxy.
        """
        if subprocess is None:
            raise subprocess_import_error
        if not isinstance(command_line, str):  # shlex.split(None) reads stdin
            raise TypeError("command_line must be a str")
        self.cmd = shlex.split(command_line)
        self.process = self._spawn(self.cmd)
        self.timeout = None
        self._pid = _pid
        self._closing = self._idle = False
        self._stderr = b""
        self._closer = self._reader = self._writer = None
        self._close_lock, self._done = threading.Lock(), threading.Event()
        self._read_lock, self._write_lock = threading.Lock(), threading.Lock()
        try:
            self._out = self.process.stdout.fileno()
            self._in = self.process.stdin.fileno()
            self._err = self.process.stderr.fileno()
            for fd in (self._out, self._in, self._err):
                os.set_blocking(fd, False)
            # poll() takes any descriptor, select() none above 1023; eventlet
            # removes select.poll, and gives a select() that works with it.
            self._poll = getattr(select, "poll", None)
            if self._poll is not None:
                self._poll_in, self._poll_out = self._poll(), self._poll()
                self._poll_in.register(self._out, select.POLLIN)
                self._poll_in.register(self._err, select.POLLIN)
                self._poll_out.register(self._in, select.POLLOUT)
            self._on_started()
        except BaseException:
            self.close()
            raise

    # How the command is run and watched; subclasses may change these.

    def _spawn(self, argv):
        """Start the command; return its `subprocess.Popen`."""
        p = subprocess.PIPE
        return subprocess.Popen(argv, stdin=p, stdout=p, stderr=p, bufsize=0)

    def _signal(self, sig):
        """Send ``sig`` to the command."""
        self.process.send_signal(sig)

    def _wait(self, timeout):
        """The exit status, within ``timeout`` seconds; None if it runs."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def _read(self, size):
        """Up to ``size`` bytes of output; None if there are none yet."""
        try:
            return os.read(self._out, size)
        except BlockingIOError:
            return None

    def _write(self, data):
        """Write what the input takes now; None if nothing fits."""
        try:
            return os.write(self._in, data)
        except BlockingIOError:
            return None

    def _on_started(self):
        """Called once the command runs and this object is ready."""

    def _on_ended(self, status):
        """Called when `recv` or `send` finds that the command has ended."""

    def _on_closed(self):
        """Called at the end of `close`."""

    def send(self, content):
        """
        Write the content received from the SSH client to the standard
        input of the forked command.

        :param str content: string to be sent to the forked command
        :return: how many bytes the command's input took (at least one)
        :raises socket.timeout: if none fit in time (see `settimeout`)
        """
        if _pid != self._pid:
            self._forked()
        self._write_lock.acquire()
        self._writer = threading.get_ident()
        try:
            deadline = None
            while not self._closing:
                try:
                    written = self._write(content)
                except IOError as e:
                    error = e.strerror
                    break
                if written is not None:
                    return written
                deadline = self._ready(False, deadline)
                if deadline is None:
                    raise socket.timeout()
            else:
                raise ProxyCommandClosed(" ".join(self.cmd))
        finally:
            self._writer = None
            if self._closing:  # close() may have left the pipe to us
                self._close(self.process.stdin)
            self._write_lock.release()
        # It probably died: say how, with its stderr unless a reader has it.
        drain = self._read_lock.acquire(False)
        try:
            status = self._exited(drain)
        finally:
            if drain and self._closing:
                self._close(*self._read_pipes())
            if drain:
                self._read_lock.release()
        if status is None:
            raise ProxyCommandFailure(" ".join(self.cmd), error)
        raise self._exit_error(status)

    def recv(self, size):
        """
        Read from the standard output of the forked program.

        :param int size: how many chars should be read

        :return:
            the bytes there are now (at most ``size``); ``b""`` once the
            output ended and the command exited with status 0 or runs on
        :raises socket.timeout: if none came in time (see `settimeout`)
        """
        if _pid != self._pid:
            self._forked()
        self._read_lock.acquire()
        self._reader = threading.get_ident()
        try:
            data = b""
            deadline = None
            while size > 0 and not self._closing:
                # After a timeout (an idle Transport's tick) wait, then read.
                if not self._idle:
                    try:
                        data = self._read(size)
                    except IOError as e:
                        cmd = " ".join(self.cmd)
                        raise ProxyCommandFailure(cmd, e.strerror)
                    if data is not None:
                        break
                self._idle = False
                deadline = self._ready(True, deadline)
                if deadline is None:
                    raise socket.timeout()
            if data or self._closing or size <= 0:
                return b"" if self._closing else data
            status = self._exited(True)
        finally:
            self._reader = None
            if self._closing:  # close() may have left the pipes to us
                self._close(*self._read_pipes())
            self._read_lock.release()
        if status:
            raise self._exit_error(status)
        return b""

    def _ready(self, reading, deadline):
        """Wait a slice of the time left, reading stderr; None once up."""
        now = time.monotonic()
        if deadline is None:
            deadline = now + (1e9 if self.timeout is None else self.timeout)
        left = deadline - now
        wait = _SLICE if left > _SLICE else left if left > 0 else 0
        if self._poll is not None:
            poller = self._poll_in if reading else self._poll_out
            ready = poller.poll(int(wait * 1000 + 0.999))
            ready = [fd for fd, _ in ready] if ready else ready
        else:
            r = [fd for fd in (self._out, self._err) if fd is not None]
            w = [] if reading else [self._in]
            r, w, _ = select.select(r if reading else [], w, [], wait)
            ready = r + w
        if not ready:
            if left <= _SLICE:
                self._idle = reading
                return None
        elif reading and self._err in ready:
            self._read_stderr()
        return deadline

    def _read_stderr(self):
        """Keep the end of what the command wrote to stderr; True if any."""
        try:
            data = os.read(self._err, 65536)
        except BlockingIOError:
            return False
        except OSError:
            data = b""
        if not data:  # end of file: stop waiting for more
            if self._poll is not None:
                self._poll_in.unregister(self._err)
            self._err = None
            return False
        kept = self._stderr + data
        self._stderr = kept[max(0, len(kept) - self.stderr_limit) :]
        return True

    def _exited(self, drain):
        """The exit status once it ended; with ``drain``, stderr's rest."""
        status = self._wait(self.eof_timeout)
        if status is not None:
            # At most 16 reads: something it started may write on and on.
            for _ in range(16 if drain and not self._closing else 0):
                if self._err is None or not self._read_stderr():
                    break
            self._on_ended(status)
        return status

    def _exit_error(self, status):
        stderr = self._stderr.decode("utf-8", "replace")
        return ProxyCommandExited(" ".join(self.cmd), status, stderr)

    def close(self):
        """
        End the command: end of file on its input, SIGTERM, SIGKILL if it
        still runs `close_timeout` seconds later; then reap it and close its
        pipes. Safe to repeat, and while other threads read or write.
        """
        if _pid != self._pid:
            # A copy made by fork (`.Transport.atfork`): drop only its pipes.
            self._closing = True
            self._close(self.process.stdin, *self._read_pipes())
            return
        if not self._close_lock.acquire(False):
            # Another close is under way: wait, unless this thread runs it.
            if self._closer != threading.get_ident():
                self._done.wait(3 * self.close_timeout + 1)
            return
        self._closer = threading.get_ident()
        try:
            self._closing = True
            self._close_pipes(self._write_lock, "_writer", self.process.stdin)
            if self._wait(0) is None:
                self._signal(signal.SIGTERM)
                if self._wait(self.close_timeout) is None:
                    self._signal(signal.SIGKILL)
                    self._wait(self.close_timeout)
            self._close_pipes(self._read_lock, "_reader", *self._read_pipes())
            self._on_closed()
        finally:
            self._done.set()

    def _read_pipes(self):
        return (self.process.stdout, self.process.stderr)

    def _forked(self):
        self.close()
        error = "belongs to process {}".format(self._pid)
        raise ProxyCommandClosed(" ".join(self.cmd), error)

    def _close(self, *pipes):
        for pipe in pipes:
            try:
                pipe.close()
            except OSError:
                pass

    def _close_pipes(self, lock, holder, *pipes):
        # Closed under a thread that waits on them, they could be reused by
        # another open() (#1715): so only once it has left. One that stays too
        # long, or that this signal handler interrupted, closes them itself.
        mine = getattr(self, holder) == threading.get_ident()
        if not mine and lock.acquire(timeout=2 * _SLICE):
            self._close(*pipes)
            lock.release()

    @property
    def closed(self):
        return self._closing or self._wait(0) is not None

    @property
    def _closed(self):
        # Concession to Python 3 socket-like API
        return self.closed

    def settimeout(self, timeout):
        self.timeout = timeout
