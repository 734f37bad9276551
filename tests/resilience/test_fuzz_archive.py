"""The archive extractor under random entry names, types, flags and orders (hypothesis).

Property: ``extract_archive`` returns a folder inside ``dest`` or raises
:class:`InvalidAdapter` — never another exception (an HTTP 500), never a file outside
``dest``. The four zips that got a 500 are pinned as explicit cases too.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.errors import InvalidAdapter
from adapters.format.archive import extract_archive

SEGMENTS = st.one_of(
    st.sampled_from(["a", "x", "adapter.json", "head.safetensors", "..", ".", "", "x" * 300,
                     "C:", "\\", "a\\b", "é", "\u202e", "\x01", " "]),
    st.text(min_size=1, max_size=12),
)
NAMES = st.lists(SEGMENTS, min_size=1, max_size=4).map("/".join) | st.sampled_from(
    ["/etc/passwd", "x/", "x/y", "x//y", "./x", "x/./y"])
ZIP_ENTRY = st.tuples(NAMES, st.sampled_from(["file", "dir", "symlink", "fifo", "weird"]),
                      st.integers(0, 0xFFFF),  # flag bits (0x1: encrypted, 0x8: data descriptor...)
                      st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                       zipfile.ZIP_LZMA]),
                      st.binary(max_size=64))
TAR_ENTRY = st.tuples(NAMES, st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                                              tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE,
                                              tarfile.CONTTYPE, b"Z"]),
                      st.binary(max_size=64), NAMES)
MODES = {"file": 0o100644, "dir": 0o040755, "symlink": 0o120777, "fifo": 0o010644, "weird": 0o170000}


def zip_bytes(entries) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, kind, flags, method, data in entries:
            info = zipfile.ZipInfo(name + ("/" if kind == "dir" and not name.endswith("/") else ""))
            info.external_attr = MODES[kind] << 16
            info.compress_type = method
            zf.writestr(info, b"" if kind == "dir" else data)
            info.flag_bits |= flags & 0x1  # the encryption flag, set after writing as a tool would
    return buf.getvalue()


def tar_bytes(entries) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, data, link in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = link
            info.size = len(data) if kind in (tarfile.REGTYPE, tarfile.CONTTYPE) else 0
            tf.addfile(info, io.BytesIO(data) if info.size else None)
    return buf.getvalue()


def check_extract(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "x"
        try:
            out = extract_archive(data, dest, max_bytes=1 << 16, max_entries=16)
        except InvalidAdapter as exc:
            assert exc.message
            return
        assert out.resolve().is_relative_to(dest.resolve())
        for root, dirs, files in os.walk(tmp):
            for f in dirs + files:
                p = Path(root) / f
                assert not p.is_symlink(), p
                assert p.resolve().is_relative_to(dest.resolve()), p


FUZZ = settings(max_examples=int(os.environ.get("TASKSWAP_FUZZ_EXAMPLES", "300")), deadline=None,
                suppress_health_check=list(HealthCheck))


@FUZZ
@given(st.lists(ZIP_ENTRY, min_size=1, max_size=6))
def test_random_zips_extract_or_get_a_typed_error(entries):
    try:
        data = zip_bytes(entries)
    except (ValueError, UnicodeEncodeError):  # zipfile itself refuses to write it
        return
    check_extract(data)


@FUZZ
@given(st.lists(TAR_ENTRY, min_size=1, max_size=6))
def test_random_tars_extract_or_get_a_typed_error(entries):
    try:
        data = tar_bytes(entries)
    except (ValueError, UnicodeEncodeError, tarfile.TarError):
        return
    check_extract(data)


@FUZZ
@given(st.binary(min_size=4, max_size=600), st.integers(0, 599), st.binary(min_size=1, max_size=8))
def test_mutated_zips_extract_or_get_a_typed_error(_, pos, patch):
    base = bytearray(zip_bytes([("a/adapter.json", "file", 0, zipfile.ZIP_DEFLATED, b"{}" * 20),
                                ("a/b", "dir", 0, zipfile.ZIP_STORED, b"")]))
    pos %= len(base)
    base[pos:pos + len(patch)] = patch
    check_extract(bytes(base))


# The zips that got a 500 (issue "Hardening, round 2", item 4).
def _zip(*entries) -> bytes:
    return zip_bytes([(n, k, f, zipfile.ZIP_DEFLATED, b"data") for n, k, f in entries])


CASES = {
    "file x then x/y": (_zip(("x", "file", 0), ("x/y", "file", 0)), "'x/y'"),
    "file then folder of the same name": (_zip(("x", "file", 0), ("x", "dir", 0)), "'x/'"),
    "folder then file of the same name": (_zip(("x", "dir", 0), ("x", "file", 0)), "'x'"),
    "a file twice": (_zip(("x", "file", 0), ("x", "file", 0)), "'x'"),
    "300-character folder name": (_zip(("d" * 300 + "/adapter.json", "file", 0),), "ddddd"),
    "encryption flag": (_zip(("adapter.json", "file", 1),), "encrypted"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_zip_cases_that_got_a_500_are_a_typed_error_naming_the_entry(tmp_path, case):
    data, words = CASES[case]
    with pytest.raises(InvalidAdapter, match="archive entry") as info:
        extract_archive(data, tmp_path / "x")
    assert words in info.value.message, info.value.message
