import errno
import os
import resource
import select
import shlex
import signal
import socket
import sys
import threading
import time

from unittest.mock import patch
from pytest import raises

from paramiko import (
    ProxyCommand,
    ProxyCommandClosed,
    ProxyCommandExited,
    ProxyCommandFailure,
)

# The module whose globals ProxyCommand's code reads (paramiko.proxy).
proxy_module = sys.modules[ProxyCommand.__init__.__module__]

# Long enough for a Python child to start on a slow machine; no wait below
# is unbounded.
LIMIT = 5

# Small programs to run as the "ProxyCommand".
ECHO = """
import os
while True:
    data = os.read(0, 65536)
    if not data:
        break
    os.write(1, data)
"""
SILENT = "import sys; sys.stdin.buffer.read()"
# Ignores SIGTERM and EOF on stdin; says "ready" once it does.
STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdout.write("ready")
sys.stdout.flush()
time.sleep(30)
"""


def python(code):
    """A command line running ``code`` with this Python."""
    return " ".join(shlex.quote(a) for a in (sys.executable, "-c", code))


def start(code, timeout=LIMIT):
    proxy = ProxyCommand(python(code))
    proxy.settimeout(timeout)
    return proxy


def wait_until(predicate, limit=LIMIT):
    deadline = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def pipes(proxy):
    process = proxy.process
    return process.stdin, process.stdout, process.stderr


def reaped(pid):
    try:
        return os.waitpid(pid, os.WNOHANG) is None
    except ChildProcessError:
        return True


class TestProxyCommand:
    def test_init_takes_command_string(self):
        with start("pass") as proxy:
            assert proxy.cmd == [sys.executable, "-c", "pass"]
            assert proxy.timeout == LIMIT

    def test_init_refuses_a_command_that_is_not_a_string(self):
        # shlex.split(None) would read the command line from stdin
        with raises(TypeError):
            ProxyCommand(None)

    def test_recv_returns_what_arrived_without_waiting_for_more(self):
        code = "import sys; o = sys.stdout; o.write('a'); o.flush(); "
        code += "sys.stdin.readline(); o.write('bc'); o.flush(); "
        code += "sys.stdin.read()"
        with start(code) as proxy:
            assert proxy.recv(1) == b"a"
            proxy.send(b"go\n")
            started = time.monotonic()
            assert proxy.recv(10) == b"bc"
            assert time.monotonic() - started < LIMIT / 2

    def test_recv_returns_at_most_size_bytes(self):
        with start(ECHO) as proxy:
            assert proxy.send(b"hello") == 5
            assert proxy.recv(2) == b"he"
            assert proxy.recv(10) == b"llo"

    def test_recv_raises_timeout_if_nothing_arrives(self):
        with start(SILENT, timeout=0.2) as proxy:
            started = time.monotonic()
            with raises(socket.timeout):
                proxy.recv(5)
            assert 0.15 < time.monotonic() - started < LIMIT / 2
            # and again, once the proxy has been found idle
            with raises(socket.timeout):
                proxy.recv(5)

    def test_recv_returns_empty_bytes_after_a_clean_exit(self):
        with start("import os; os.write(1, b'bye')") as proxy:
            assert proxy.recv(10) == b"bye"
            assert proxy.recv(10) == b""
            assert proxy.process.pid > 0

    def test_recv_raises_ProxyCommandExited_on_a_failing_exit(self):
        code = "import sys; sys.stderr.write('no route\\n'); sys.exit(3)"
        with start(code) as proxy:
            with raises(ProxyCommandExited) as info:
                proxy.recv(10)
        error = info.value
        assert isinstance(error, ProxyCommandFailure)
        assert isinstance(error, EOFError)
        assert error.command == " ".join(proxy.cmd)
        assert error.returncode == 3
        assert error.signal_name is None
        assert error.stderr_tail == "no route\n"
        assert str(error) == 'ProxyCommand("{}") {}'.format(
            error.command, "exited with status 3; stderr: no route"
        )

    def test_recv_raises_ProxyCommandExited_for_a_killed_proxy(self):
        with start(STUBBORN) as proxy:
            assert proxy.recv(5) == b"ready"
            os.kill(proxy.process.pid, signal.SIGKILL)
            with raises(ProxyCommandExited) as info:
                proxy.recv(10)
        assert info.value.returncode == -signal.SIGKILL
        assert info.value.signal_name == "SIGKILL"
        assert "was killed by SIGKILL" in str(info.value)

    def test_send_returns_how_many_bytes_the_proxy_took(self):
        with start(ECHO) as proxy:
            assert proxy.send(b"data") == 4
            assert proxy.recv(4) == b"data"

    def test_send_honours_the_timeout_on_a_proxy_that_never_reads(self):
        with start("import time; time.sleep(30)", timeout=0.2) as proxy:
            data = b"x" * (4 << 20)
            taken = proxy.send(data)
            assert 0 < taken < len(data)
            started = time.monotonic()
            with raises(socket.timeout):
                for _ in range(len(data) // taken + 1):
                    proxy.send(data)
            assert time.monotonic() - started < LIMIT

    def test_send_raises_ProxyCommandFailure_on_a_closed_input(self):
        code = "import os, sys, time; os.close(0); sys.stdout.write('x'); "
        code += "sys.stdout.flush(); time.sleep(30)"
        with start(code) as proxy:
            proxy.eof_timeout = 0.05
            assert proxy.recv(1) == b"x"
            with raises(ProxyCommandFailure) as info:
                proxy.send(b"data")
        # It still runs: nothing says how it ended.
        assert not isinstance(info.value, ProxyCommandExited)
        assert info.value.error == os.strerror(errno.EPIPE)

    def test_send_raises_ProxyCommandExited_once_the_proxy_is_gone(self):
        code = "import os, sys; os.close(0); sys.stderr.write('bye'); "
        code += "sys.exit(4)"
        with start(code) as proxy:
            assert wait_until(lambda: proxy.closed)
            with raises(ProxyCommandExited) as info:
                proxy.send(b"data")
        assert info.value.returncode == 4
        assert info.value.stderr_tail == "bye"

    def test_a_stderr_flood_neither_blocks_nor_grows_without_bound(self):
        code = "import sys; sys.stderr.write('x' * 300000 + 'END'); "
        code += "sys.stderr.flush(); sys.stdout.write('done'); "
        code += "sys.stdout.flush(); sys.stdin.readline(); sys.exit(1)"
        with start(code) as proxy:
            proxy.stderr_limit = 1000
            # Its stderr pipe holds 64 KiB at most: "done" comes only if
            # recv keeps reading stderr meanwhile.
            assert proxy.recv(4) == b"done"
            proxy.send(b"quit\n")
            with raises(ProxyCommandExited) as info:
                proxy.recv(4)
        tail = info.value.stderr_tail
        assert len(tail) == 1000
        assert tail.endswith("xxxEND")

    def test_close_reaps_the_proxy_and_closes_its_pipes(self):
        proxy = start(ECHO)
        proxy.close()
        assert proxy.process.returncode is not None
        assert reaped(proxy.process.pid)
        assert all(pipe.closed for pipe in pipes(proxy))

    def test_close_kills_a_proxy_that_ignores_SIGTERM(self):
        proxy = start(STUBBORN)
        proxy.close_timeout = 0.2
        assert proxy.recv(5) == b"ready"
        started = time.monotonic()
        proxy.close()
        took = time.monotonic() - started
        assert proxy.process.returncode == -signal.SIGKILL
        assert 0.15 < took < 1
        assert reaped(proxy.process.pid)
        assert all(pipe.closed for pipe in pipes(proxy))

    def test_close_is_repeatable_and_safe_after_the_proxy_exited(self):
        proxy = start("pass")
        assert wait_until(lambda: proxy.closed)
        proxy.close()  # no ProcessLookupError
        proxy.close()
        assert proxy.process.returncode == 0
        assert all(pipe.closed for pipe in pipes(proxy))

    def test_close_is_safe_after_someone_else_reaped_the_proxy(self):
        proxy = start("pass")
        proxy.process.wait(LIMIT)  # a SIGCHLD handler, an event loop...
        proxy.close()  # no ProcessLookupError
        assert proxy.process.returncode == 0
        assert all(pipe.closed for pipe in pipes(proxy))

    def test_close_from_another_thread_ends_a_blocked_recv(self):
        proxy = start(SILENT, timeout=None)
        got = []
        reader = threading.Thread(target=lambda: got.append(proxy.recv(10)))
        reader.daemon = True
        reader.start()
        reader.join(0.1)
        assert reader.is_alive()
        proxy.close()
        reader.join(LIMIT)
        assert not reader.is_alive()
        assert got == [b""]
        assert proxy.process.returncode is not None
        assert all(pipe.closed for pipe in pipes(proxy))

    def test_send_after_close_raises_ProxyCommandClosed(self):
        proxy = start(ECHO)
        proxy.close()
        with raises(ProxyCommandClosed) as info:
            proxy.send(b"data")
        assert isinstance(info.value, ProxyCommandFailure)
        assert str(info.value) == 'ProxyCommand("{}") was closed'.format(
            " ".join(proxy.cmd)
        )

    def test_recv_after_close_returns_empty_bytes(self):
        proxy = start(ECHO)
        proxy.close()
        assert proxy.recv(10) == b""

    def test_closed_exposes_whether_the_proxy_has_ended(self):
        with start(SILENT) as proxy:
            assert proxy.closed is False
            assert proxy._closed is False
        assert proxy.closed is True
        assert proxy._closed is True
        # A proxy that ends by itself is closed too.
        with start("pass") as proxy:
            assert wait_until(lambda: proxy.closed)
            assert proxy._closed is True

    def test_settimeout_sets_the_timeout(self):
        with ProxyCommand(python(SILENT)) as proxy:
            assert proxy.timeout is None
            proxy.settimeout(7)
            assert proxy.timeout == 7

    def test_works_with_descriptors_above_1023(self):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < 2048 and (hard == resource.RLIM_INFINITY or hard >= 2048):
            resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))
        filler, taken = os.open(os.devnull, os.O_RDONLY), []
        try:
            # Fill every free descriptor up to 1100 so the pipes get above.
            for fd in range(3, 1100):
                try:
                    os.fstat(fd)
                except OSError:
                    os.dup2(filler, fd)
                    taken.append(fd)
            with start(ECHO) as proxy:
                assert min(p.fileno() for p in pipes(proxy)) > 1023
                assert proxy.send(b"high") == 4
                assert proxy.recv(4) == b"high"
        finally:
            for fd in taken + [filler]:
                os.close(fd)
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    @patch.object(select, "poll", new=None)
    def test_works_where_select_has_no_poll(self):
        # eventlet's select module, say: select() serves instead.
        with start(ECHO, timeout=0.2) as proxy:
            assert proxy.send(b"data") == 4
            assert proxy.recv(4) == b"data"
            with raises(socket.timeout):
                proxy.recv(4)
        assert proxy.process.returncode is not None
        assert all(pipe.closed for pipe in pipes(proxy))

    def test_close_in_a_forked_child_leaves_the_parents_proxy_alone(self):
        with start(ECHO) as proxy:
            assert proxy.send(b"1") == 1 and proxy.recv(1) == b"1"
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: report through the pipe, never return
                report = b"ok"
                try:
                    try:  # the parent's output is not the child's to read
                        proxy.recv(1)
                        report = b"recv worked"
                    except ProxyCommandClosed:
                        pass
                    proxy.close()
                    try:
                        proxy.send(b"x")
                        report = b"send worked"
                    except ProxyCommandClosed:
                        pass
                except BaseException as e:
                    report = repr(e).encode()
                finally:
                    os.write(w, report)
                    os._exit(0)
            os.close(w)
            try:
                ready, _, _ = select.select([r], [], [], LIMIT)
                report = os.read(r, 1000) if ready else b"(no report)"
            finally:
                os.close(r)
                if not wait_until(lambda: os.waitpid(pid, os.WNOHANG)[0]):
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            assert report == b"ok"
            assert proxy.closed is False
            assert proxy.send(b"2") == 1 and proxy.recv(1) == b"2"
            assert proxy.process.returncode is None

    @patch.object(proxy_module, "subprocess", new=None)
    @patch.object(
        proxy_module, "subprocess_import_error", new=ImportError("meh")
    )
    def test_raises_subprocess_ImportErrors_at_runtime(self):
        # Not an ideal test, but I don't know of a non-bad way to fake out
        # module-time ImportErrors. So we mock the symptoms. Meh!
        with raises(ImportError) as info:
            ProxyCommand("hi!!!")
        assert str(info.value) == "meh"
