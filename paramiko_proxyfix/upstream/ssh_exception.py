# The exceptions of the ProxyCommand fix, in paramiko's idiom: the classes
# below go into paramiko/ssh_exception.py, after ProxyCommandFailure (see
# tools/make_patches.py); paramiko_proxyfix uses them from here.

import signal

from paramiko.ssh_exception import ProxyCommandFailure


class ProxyCommandExited(ProxyCommandFailure, EOFError):
    """
    The "ProxyCommand" process ended, so the connection through it has too.

    It is an `EOFError` as well: the connection reached its end of file.

    :param str command: The command line of the proxy.
    :param int returncode:
        Its exit status; negative for the signal that killed it.
    :param str stderr_tail: The last of what it wrote to its standard error.
    """

    def __init__(self, command, returncode, stderr_tail=""):
        self.returncode = returncode
        self.signal_name = None
        self.stderr_tail = stderr_tail
        if returncode < 0:
            try:
                self.signal_name = signal.Signals(-returncode).name
            except ValueError:
                self.signal_name = "signal {}".format(-returncode)
            error = "was killed by {}".format(self.signal_name)
        else:
            error = "exited with status {}".format(returncode)
        shown = stderr_tail.replace("\r\n", "\n").strip()
        if shown:
            error += "; stderr: {}".format(shown)
        ProxyCommandFailure.__init__(self, command, error)
        self.args = (command, returncode, stderr_tail)

    def __str__(self):
        return 'ProxyCommand("{}") {}'.format(self.command, self.error)


class ProxyCommandClosed(ProxyCommandFailure):
    """
    The `.ProxyCommand` was used after it was closed.

    :param str command: The command line of the proxy.
    :param str error: Why it can no longer be used.
    """

    def __init__(self, command, error="was closed"):
        ProxyCommandFailure.__init__(self, command, error)

    def __str__(self):
        return 'ProxyCommand("{}") {}'.format(self.command, self.error)
