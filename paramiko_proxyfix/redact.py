"""What this package shows of a command line: secrets hidden, control codes escaped.

The WARNING line for a proxy's end and the fleet view's replies travel to log
shippers and to anyone with access to the Celery broker, so they show a
proxy's command with password-like values replaced by ``***``: ``sshpass
-p``, long options such as ``--password``, ``-o *Password*=`` and the like,
``NAME=value`` words for such names, and the password of a URL's
``user:password@``. Exceptions keep upstream's text (see docs/security.md).
"""

from __future__ import annotations

import os
import re

__all__ = ["HIDDEN", "printable", "redact"]

HIDDEN = "***"
#: Names whose values are secret: options, ``-o`` settings, variables.
_SECRET = re.compile(r"pass|secret|token|credential|apikey|api_key", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)[^/@\s]*@")
_NAME_VALUE = re.compile(
    r"^(?P<name>-{0,2}[A-Za-z_][A-Za-z0-9_.-]*)=(?P<value>.*)$", re.S
)


def _word(word: str) -> str:
    word = _URL_PASSWORD.sub(lambda m: m["head"] + HIDDEN + "@", word)
    m = _NAME_VALUE.match(word)
    if m and _SECRET.search(m["name"]):
        return f"{m['name']}={HIDDEN}"
    return word


def _is_sshpass(word: str) -> bool:
    # sshpass itself, or a setting that runs it: ProxyCommand=sshpass
    return os.path.basename(word.rsplit("=", 1)[-1].strip("'\"")) == "sshpass"


def redact(argv: list[str]) -> str:
    """``argv`` joined by spaces, with secret values replaced by ``***``.

    A word that is a command line itself (``sh -c "sshpass -p ..."``, ``-o
    "ProxyCommand=sshpass -p ..."``) is looked into the same way.
    """
    out: list[str] = []
    sshpass = False  # among sshpass's own options (-p PASSWORD), before its command
    hide_next = keep_next = False
    for word in argv:
        if hide_next:
            out.append(HIDDEN)
            hide_next = False
            continue
        if " " in word.strip():
            out.append(redact(word.split(" ")))
            sshpass = False
            continue
        if _is_sshpass(word):
            sshpass = True
            out.append(_word(word))
            continue
        if sshpass and word in ("-P", "-f", "-d"):  # options with an argument
            out.append(word)
            keep_next = True
            continue
        sshpass = sshpass and (keep_next or word.startswith("-"))
        if keep_next:
            keep_next = False
            out.append(word)
            continue
        if sshpass and word.startswith("-p"):
            hide_next = word == "-p"
            out.append(word if hide_next else "-p" + HIDDEN)
            continue
        if word.startswith("-o") and len(word) > 2:  # -oName=value
            out.append("-o" + _word(word[2:]))
            continue
        if word.startswith("--") and "=" not in word and _SECRET.search(word):
            hide_next = True  # --password VALUE
        out.append(_word(word))
    return " ".join(out)


def printable(text: str) -> str:
    """``text`` with non-printable characters escaped (``\\x1b``, ``\\n``), so
    that it cannot forge lines or reach a terminal as control codes."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
        for c in text
    )
