# Types for ssh_exception.py, which is written in paramiko's idiom.
from paramiko.ssh_exception import ProxyCommandFailure

class ProxyCommandExited(ProxyCommandFailure, EOFError):
    returncode: int
    signal_name: str | None
    stderr_tail: str
    def __init__(
        self, command: str, returncode: int, stderr_tail: str = ""
    ) -> None: ...

class ProxyCommandClosed(ProxyCommandFailure):
    def __init__(self, command: str, error: str = "was closed") -> None: ...
