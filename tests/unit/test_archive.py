"""Uploaded archives: zip and tar.gz, refusing traversal, links, bombs and junk."""

import io
import tarfile
import zipfile

import pytest

from adapters.errors import InvalidAdapter
from adapters.format.archive import extract_archive, make_archive
from support.factories import head_adapter


@pytest.mark.parametrize("fmt", ["zip", "tar.gz"])
def test_round_trip(tmp_path, text_backbone, fmt):
    folder = head_adapter(tmp_path / "a", text_backbone, "t1")
    out = extract_archive(make_archive(folder, fmt), tmp_path / "x")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert (out / "head.safetensors").read_bytes() == (folder / "head.safetensors").read_bytes()


def test_single_top_folder_is_stepped_into(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("myadapter/adapter.json", "{}")
    assert extract_archive(buf.getvalue(), tmp_path / "x").name == "myadapter"


def _zip(entries):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _ti(name, size=0, type_=tarfile.REGTYPE, linkname=""):
    ti = tarfile.TarInfo(name)
    ti.size, ti.type, ti.linkname = size, type_, linkname
    return ti


@pytest.mark.parametrize("data, word", [
    (_zip([("../evil.json", "{}")]), r"'\.\.'"),
    (_zip([("/etc/evil.json", "{}")]), "absolute"),
    (_zip([(f"f{i}.json", "{}") for i in range(100)]), "entries"),
    (_zip([("bomb.json", "0" * (2 << 20))]), "decompression bomb"),
    (_tar([(_ti("../x.json", 2), b"{}")]), r"'\.\.'"),
    (_tar([(_ti("link.json", type_=tarfile.SYMTYPE, linkname="/etc/passwd"), None)]), "link"),
    (_tar([(_ti("hard.json", type_=tarfile.LNKTYPE, linkname="x"), None)]), "link"),
    (_tar([(_ti("dev", type_=tarfile.CHRTYPE), None)]), "not a regular file"),
    (b"this is not an archive at all", "not a zip"),
    (b"PK\x03\x04garbage", "zip"),
])
def test_hostile_archives_are_refused(tmp_path, data, word):
    with pytest.raises(InvalidAdapter, match=word):
        extract_archive(data, tmp_path / "x", max_bytes=1 << 20, max_entries=64)


def test_zip_symlink_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        info = zipfile.ZipInfo("link.json")
        info.external_attr = (0o120777 << 16)
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InvalidAdapter, match="symbolic link"):
        extract_archive(buf.getvalue(), tmp_path / "x")


def test_adapter_folder_with_a_named_pipe_is_refused_without_reading_it(tmp_path):
    """A registration by path reads the folder's files: a FIFO named adapter.json would
    block that read (and the one registration thread) forever."""
    import os
    from adapters.plugin_checks import read_adapter_dir
    folder = tmp_path / "a"
    folder.mkdir()
    os.mkfifo(folder / "adapter.json")
    with pytest.raises(InvalidAdapter, match="adapter.json is not a regular file"):
        read_adapter_dir(folder)
