"""Messages fit to show a client: no object addresses, no absolute paths of this host.

Error messages are built from exceptions, and some exceptions print what a client must
not see and cannot use: ``<Foo object at 0x7f3a...>`` (an address: a hint for an exploit,
and noise) and ``/home/svc/.cache/taskswap/...`` (the host's layout). Every error body the
service writes, and every fit job's error, goes through :func:`redact`.
"""

from __future__ import annotations

import re

_ADDRESS = re.compile(r"\s+at 0x[0-9a-fA-F]+|0x[0-9a-fA-F]{6,}")
# An absolute path of the host: under a root no HTTP route of ours uses (routes such as
# '/adapters/{name}/fit' and URLs are kept).
_ROOTS = "tmp|home|root|usr|var|opt|work|srv|etc|proc|mnt|media|run|lib|lib64|private|Users|app|data|nix|snap"
_PATH = re.compile(rf"(?<![\w:/.~-])/(?:{_ROOTS})(?:/[\w.@+~-]*)*?/?([\w.@+~-]*)(?![\w/.@+~-])")


def redact(message: str) -> str:
    """``message`` without object addresses and with absolute paths cut to their last part.

    >>> redact("<Foo object at 0x7f3a2c1d5e10> failed on /tmp/taskswap-fit-1a/out/x.json")
    '<Foo object> failed on …/x.json'
    >>> redact("POST /adapters/{name}/fit: see https://example.org/a/b")
    'POST /adapters/{name}/fit: see https://example.org/a/b'
    """
    message = _ADDRESS.sub("", message)
    return _PATH.sub(lambda m: "…/" + m.group(1) if m.group(1) else "…/", message)
