"""Read GNU gettext ``.mo`` catalogs: (source, translation) pairs, as the GNU gettext manual
documents the file ("The Format of GNU MO Files"): a magic number, then a table of original
strings and one of translations, each entry a (length, offset) pair.

Python's :mod:`gettext` parses the same files but keeps the pairs in a private attribute, so the
format's few documented fields are read here. Plural entries (``msgid\\0msgid_plural``) keep the
singular of both sides; entries with a context (``ctxt\\x04msgid``) drop the context; the header
entry (empty msgid) gives the charset.

    >>> import struct
    >>> def mo(pairs):
    ...     n = len(pairs); ids = b""; strs = b""; o, t = [], []
    ...     base = 28 + 16 * n
    ...     for k, v in pairs: o.append((len(k), base + len(ids))); ids += k + b"\\0"
    ...     for k, v in pairs: t.append((len(v), base + len(ids) + len(strs))); strs += v + b"\\0"
    ...     head = struct.pack("<7I", 0x950412de, 0, n, 28, 28 + 8 * n, 0, 0)
    ...     return head + b"".join(struct.pack("<2I", *x) for x in o + t) + ids + strs
    >>> read_mo_bytes(mo([(b"Open", b"Ouvrir")]))
    [('Open', 'Ouvrir')]
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

MAGIC = 0x950412DE
_CHARSET = re.compile(r"charset=([\w.-]+)", re.I)


def read_mo_bytes(data: bytes) -> list[tuple[str, str]]:
    """Every translated entry of a ``.mo`` file's bytes as ``(msgid, msgstr)``; ``ValueError``
    for bytes that are not a ``.mo`` file."""
    if len(data) < 28:
        raise ValueError("too short for a .mo file")
    for order in ("<", ">"):
        magic, _rev, n, o_off, t_off = struct.unpack(order + "5I", data[:20])
        if magic == MAGIC:
            break
    else:
        raise ValueError("not a .mo file (bad magic number)")
    if o_off + 8 * n > len(data) or t_off + 8 * n > len(data):
        raise ValueError(".mo tables run past the end of the file")
    raw = []
    for i in range(n):
        ol, oo = struct.unpack(order + "2I", data[o_off + 8 * i:o_off + 8 * i + 8])
        tl, to = struct.unpack(order + "2I", data[t_off + 8 * i:t_off + 8 * i + 8])
        raw.append((data[oo:oo + ol], data[to:to + tl]))
    charset = "utf-8"
    for k, v in raw:
        if not k:
            m = _CHARSET.search(v.decode("ascii", "replace"))
            charset = m.group(1) if m and m.group(1).upper() != "CHARSET" else charset
    pairs = []
    for k, v in raw:
        if not k or not v:
            continue
        k = k.split(b"\x04", 1)[-1].split(b"\0", 1)[0]
        v = v.split(b"\0", 1)[0]
        try:
            pairs.append((k.decode(charset), v.decode(charset)))
        except (UnicodeDecodeError, LookupError):
            continue  # a catalog whose header lies about its charset: skip the entry
    return pairs


def read_mo(path: Path) -> list[tuple[str, str]]:
    """The pairs of one ``.mo`` file (see :func:`read_mo_bytes`)."""
    return read_mo_bytes(Path(path).read_bytes())
