"""ReadAhead on an os.pipe: buffering, partial reads, end of file, writes.

It serves paramiko's small reads from one large read of the pipe, and
returns None (not b"") when nothing is there yet: b"" is end of file.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator

import pytest

from paramiko_proxyfix import pipesize
from paramiko_proxyfix.pipesize import BIG_PIPE, CHUNK
from paramiko_proxyfix.readahead import ReadAhead

pytestmark = pytest.mark.timeout(10)

F_GETPIPE_SZ = 1032


class Pipes:
    """The proxy's output (we read ``out``, it writes ``feed``) and input (we
    write ``inp``, it reads ``sink``), all non-blocking as the fix sets them."""

    def __init__(self) -> None:
        self.out, self.feed = os.pipe()
        self.sink, self.inp = os.pipe()
        for fd in (self.out, self.feed, self.sink, self.inp):
            os.set_blocking(fd, False)
        self.open = {self.out, self.feed, self.sink, self.inp}

    def close(self, fd: int) -> None:
        if fd in self.open:
            self.open.discard(fd)
            os.close(fd)


@pytest.fixture
def pipes() -> Iterator[Pipes]:
    p = Pipes()
    yield p
    for fd in list(p.open):
        p.close(fd)


@pytest.fixture
def ahead(pipes: Pipes) -> Iterator[ReadAhead]:
    ra = ReadAhead(pipes.out, pipes.inp)
    yield ra
    ra.release()


def test_nothing_there_yet_is_none_not_eof(pipes: Pipes, ahead: ReadAhead) -> None:
    assert ahead.read(10) is None
    assert ahead.bytes_in == 0


def test_small_reads_are_served_from_one_read_of_the_pipe(
    pipes: Pipes, ahead: ReadAhead
) -> None:
    os.write(pipes.feed, b"hello world")
    assert ahead.read(5) == b"hello"
    assert ahead.bytes_in == 11  # all of it came in one read
    os.write(pipes.feed, b"!")  # stays in the pipe while the buffer serves
    assert ahead.read(3) == b" wo"
    assert ahead.read(3) == b"rld"  # exactly the rest: no read of the pipe
    assert ahead.bytes_in == 11
    assert ahead.read(3) == b"!"
    assert ahead.bytes_in == 12
    assert ahead.read(3) is None


def test_a_read_longer_than_the_buffer_adds_what_the_pipe_holds(
    pipes: Pipes, ahead: ReadAhead
) -> None:
    os.write(pipes.feed, b"abcdef")
    assert ahead.read(2) == b"ab"
    os.write(pipes.feed, b"ghij")
    assert ahead.read(100) == b"cdefghij"  # the rest, plus the pipe's 4 bytes
    assert ahead.read(100) is None


def test_a_partial_read_returns_what_is_there(pipes: Pipes, ahead: ReadAhead) -> None:
    os.write(pipes.feed, b"abc")
    assert ahead.read(2) == b"ab"
    assert ahead.read(100) == b"c"  # the pipe is empty: no waiting
    assert ahead.read(1) is None


def test_end_of_file_after_the_buffered_bytes(pipes: Pipes, ahead: ReadAhead) -> None:
    os.write(pipes.feed, b"abc")
    pipes.close(pipes.feed)
    assert ahead.read(1) == b"a"
    assert ahead.read(1) == b"b"
    assert ahead.read(5) == b"c"  # not b"c" then EOF in one answer
    assert ahead.read(5) == b""
    assert ahead.read(5) == b""


def test_end_of_file_at_once(pipes: Pipes, ahead: ReadAhead) -> None:
    pipes.close(pipes.feed)
    assert ahead.read(5) == b""


def test_large_reads_take_more_than_a_chunk(pipes: Pipes, ahead: ReadAhead) -> None:
    data = bytes(range(256)) * 200  # 51200 bytes
    os.write(pipes.feed, data)
    got = b""
    for size in (1, 4, 16, 35000, 100000):
        piece = ahead.read(size)
        assert piece is not None
        got += piece
    assert got == data
    assert ahead.read(1) is None


def test_reading_updates_last_io(pipes: Pipes, ahead: ReadAhead) -> None:
    before = ahead.last_io
    time.sleep(0.01)
    assert ahead.read(1) is None
    assert ahead.last_io == before  # nothing came: not I/O
    os.write(pipes.feed, b"x")
    assert ahead.read(1) == b"x"
    assert ahead.last_io > before


def test_write_returns_what_the_pipe_took(pipes: Pipes, ahead: ReadAhead) -> None:
    assert ahead.write(b"ping") == 4
    assert os.read(pipes.sink, 10) == b"ping"
    assert ahead.bytes_out == 4


def test_write_to_a_full_pipe_is_partial_then_none(
    pipes: Pipes, ahead: ReadAhead
) -> None:
    size = fcntl.fcntl(pipes.inp, F_GETPIPE_SZ)
    taken = ahead.write(b"x" * (size + 10000))
    assert taken is not None and 0 < taken <= size  # what fitted, not all
    assert ahead.write(b"more") is None  # nothing fits: None, not 0
    assert ahead.bytes_out == taken
    os.read(pipes.sink, 8192)
    assert ahead.write(b"more") == 4


def test_write_to_a_closed_reader_raises(pipes: Pipes, ahead: ReadAhead) -> None:
    pipes.close(pipes.sink)
    with pytest.raises(BrokenPipeError):
        ahead.write(b"x")


def test_a_full_read_grows_the_pipe_within_the_budget(
    pipes: Pipes, ahead: ReadAhead
) -> None:
    before = pipesize._total
    os.write(pipes.feed, b"y" * CHUNK)  # the proxy is ahead of us
    assert ahead.read(10) == b"y" * 10
    grown = ahead.grown
    if grown is None:  # no budget: this user is at its pipe limit
        assert pipesize._total == before
        return
    assert fcntl.fcntl(pipes.out, F_GETPIPE_SZ) == BIG_PIPE
    assert pipesize._total == before + BIG_PIPE - grown.size
    ahead.release()
    assert ahead.grown is None and pipesize._total == before


def test_an_idle_grown_pipe_shrinks_back(pipes: Pipes, ahead: ReadAhead) -> None:
    before = pipesize._total
    os.write(pipes.feed, b"y" * CHUNK)
    assert ahead.read(CHUNK) == b"y" * CHUNK
    if ahead.grown is None:
        pytest.skip("no pipe budget for this user")
    size = ahead.grown.size
    ahead.idle(time.monotonic())  # not idle long enough yet
    assert ahead.grown is not None
    ahead.idle(time.monotonic() + pipesize.SHRINK_AFTER + 1)
    assert ahead.grown is None
    assert fcntl.fcntl(pipes.out, F_GETPIPE_SZ) == size
    assert pipesize._total == before
