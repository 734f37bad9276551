"""Files another user's process reads are readable by others.

The image bakes backbones as root and serves as uid 10001; replicas and operators write
adapters that other users' processes load. safetensors' ``save_file`` (so
``save_pretrained``) creates 0600 files whatever the umask, so every writer makes its files
group/other-readable. These tests write under ``umask 077`` (the most restrictive), so a
file comes out readable only because the writer made it so.
"""

import os
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest

from adapters.backbones.base import BackboneSpec, load_backbone
from adapters.backbones.embedded import mobilenet_v2_path
from adapters.backbones.tiny import write_tiny_text_backbone
from adapters.errors import InvalidInput
from adapters.format.archive import make_archive
from adapters.store import open_store
from support.factories import head_adapter


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def private_entries(root: Path) -> list[str]:
    """Entries under ``root`` (itself included) that group or others cannot read/traverse."""
    bad = []
    for p in [root, *sorted(root.rglob("*"))]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        need = 0o055 if p.is_dir() else 0o044
        if not p.is_symlink() and mode & need != need:
            bad.append(f"{p.relative_to(root)} {mode:04o}")
    return bad


@pytest.mark.real
def test_converted_backbone_files_are_readable_by_others(tmp_path):
    with umask(0o077):
        folder = mobilenet_v2_path(tmp_path)
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "imagenet_head.safetensors", "config.json"} <= names
    assert private_entries(folder) == []


def test_written_head_adapter_is_readable_by_others(tmp_path, text_backbone):
    with umask(0o077):
        folder = head_adapter(tmp_path / "a", text_backbone, "modes")
    assert (folder / "head.safetensors").is_file()
    assert private_entries(folder) == []


def test_adapters_written_to_the_store_are_readable_by_others(tmp_path, text_backbone):
    # An adapter folder as a user leaves it: 0700 folder, 0600 files (as save_file writes).
    src = head_adapter(tmp_path / "src", text_backbone, "modes")
    for p in [src, *src.iterdir()]:
        p.chmod(0o700 if p.is_dir() else 0o600)
    with umask(0o077):
        store = open_store(str(tmp_path / "store"))
        version = store.put_version("modes", src)
    stored = store.version_path("modes", version)
    assert (stored / "head.safetensors").is_file()
    assert private_entries(stored) == []


def test_adapter_registered_over_the_registry_is_readable_by_others(tmp_path, registry, text_backbone):
    # The upload path: a zip extracted into a private temp folder, then stored.
    from adapters.format.archive import extract_archive
    src = head_adapter(tmp_path / "src", text_backbone, "modes-reg")
    with umask(0o077):
        work = Path(tempfile.mkdtemp(dir=tmp_path))  # 0700, like the server's upload folder
        folder = extract_archive(make_archive(src), work)
        loaded = registry.register(folder)
    stored = registry.store.version_path("modes-reg", loaded.version)
    assert private_entries(stored) == []


@contextmanager
def as_other_user():
    """Run the block as a user that does not own the test's files (uid 65534 when root)."""
    if os.geteuid() != 0:
        yield False  # already not root: the caller takes the read bit away instead
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield True
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_unreadable_backbone_error_names_the_permission_problem(text_backbone):
    # A folder everyone may enter (tmp_path's parents are private to root) with the weight
    # file left as save_file writes it when the writer forgets to publish it: 0600.
    root = Path(tempfile.mkdtemp(prefix="taskswap-modes-"))
    try:
        root.chmod(0o755)
        folder = write_tiny_text_backbone(root / "text")
        for p in [folder, *folder.iterdir()]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        weights = folder / "model.safetensors"
        weights.chmod(0o600)
        spec = BackboneSpec(name="text", source=str(folder))
        load_backbone(spec)  # the owner reads it (and every module it needs is imported now)
        with as_other_user() as switched:
            if not switched:
                weights.chmod(0o000)
            with pytest.raises(InvalidInput) as err:
                load_backbone(spec)
        message = str(err.value)
        assert "permission denied" in message and str(weights) in message, message
        assert "No such file" not in message, message
    finally:
        for p in root.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        import shutil
        shutil.rmtree(root)


def test_folder_behind_a_private_parent_is_a_permission_problem(tmp_path):
    folder = write_tiny_text_backbone(tmp_path / "private" / "text")
    (tmp_path / "private").chmod(0o700)
    spec = BackboneSpec(name="text", source=str(folder))
    with as_other_user() as switched:
        if not switched:
            (tmp_path / "private").chmod(0o000)
        try:
            with pytest.raises(InvalidInput) as err:
                load_backbone(spec)
        finally:
            if not switched:
                (tmp_path / "private").chmod(0o700)
    message = str(err.value)
    assert "permission denied" in message and "does not exist" not in message, message
