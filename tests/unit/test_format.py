"""Adapter format: manifest rules, safetensors header checks, directory checks, hashing."""

import json
import struct

import pytest
import torch
from safetensors.torch import save_file

from adapters.errors import InvalidAdapter
from adapters.format import Manifest, content_hash
from adapters.plugin_checks import read_adapter_dir
from adapters.format.safetensors_io import read_header, load_tensors
from support.factories import head_adapter


def test_head_adapter_round_trip(tmp_path, text_backbone):
    folder = head_adapter(tmp_path / "a", text_backbone, "sentiment", hidden=(8,))
    adir = read_adapter_dir(folder)
    assert adir.kind == "head" and adir.manifest.name == "sentiment"
    assert adir.manifest.backbone.fingerprint == text_backbone.fingerprint
    assert adir.headers["head.safetensors"]["layers.0.weight"] == ("F32", (8, text_backbone.hidden_size))
    assert (folder / "README.md").exists()


def test_manifest_keeps_unknown_keys(tmp_path, text_backbone):
    folder = head_adapter(tmp_path / "a", text_backbone, "t1")
    data = json.loads((folder / "adapter.json").read_text())
    data["future_field"] = {"x": 1}
    (folder / "adapter.json").write_text(json.dumps(data))
    m = read_adapter_dir(folder).manifest
    assert m.model_dump()["future_field"] == {"x": 1}


@pytest.mark.parametrize("patch, word", [
    ({"kind": "adapterx"}, "kind"),
    ({"name": "Bad Name!"}, "name"),
    ({"labels": ["a", "a"]}, "unique"),
    ({"labels": ["only"]}, "at least 2"),
    ({"format_version": 99}, "newer"),
])
def test_manifest_errors_name_the_field(tmp_path, text_backbone, patch, word):
    folder = head_adapter(tmp_path / "a", text_backbone, "t1")
    data = {**json.loads((folder / "adapter.json").read_text()), **patch}
    (folder / "adapter.json").write_text(json.dumps(data))
    with pytest.raises(InvalidAdapter, match=word):
        read_adapter_dir(folder)


@pytest.mark.parametrize("name", ["model.bin", "weights.pt", "head.pkl", "x.ckpt"])
def test_pickles_are_refused(tmp_path, text_backbone, name):
    folder = head_adapter(tmp_path / "a", text_backbone, "t1")
    (folder / name).write_bytes(b"\x80\x04K\x01.")  # a real pickle of the int 1
    with pytest.raises(InvalidAdapter, match="pickle"):
        read_adapter_dir(folder)


def test_links_and_subfolders_are_refused(tmp_path, text_backbone):
    folder = head_adapter(tmp_path / "a", text_backbone, "t1")
    (folder / "evil.json").symlink_to("/etc/passwd")
    (folder / "sub").mkdir()
    with pytest.raises(InvalidAdapter) as err:
        read_adapter_dir(folder)
    assert any("link" in p for p in err.value.problems) and any("folder" in p for p in err.value.problems)


def test_missing_weights_named(tmp_path, text_backbone):
    folder = head_adapter(tmp_path / "a", text_backbone, "t1")
    (folder / "head.safetensors").unlink()
    with pytest.raises(InvalidAdapter, match="head.safetensors is missing"):
        read_adapter_dir(folder)


def test_content_hash_is_stable_and_content_sensitive(tmp_path, text_backbone):
    a = head_adapter(tmp_path / "a", text_backbone, "t1", seed=1)
    b = head_adapter(tmp_path / "b", text_backbone, "t1", seed=1)
    c = head_adapter(tmp_path / "c", text_backbone, "t1", seed=2)
    # created_at differs between a and b: normalise it to compare the weights' effect alone
    for f in (a, b, c):
        d = json.loads((f / "adapter.json").read_text()); d["created_at"] = "x"
        (f / "adapter.json").write_text(json.dumps(d))
    assert content_hash(a) == content_hash(b) != content_hash(c)
    assert len(content_hash(a)) == 64


def _raw_safetensors(path, header: dict, data: bytes = b""):
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize("header, data, word", [
    ({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 8, "byte range"),
    ({"w": {"dtype": "X99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "dtype"),
    ({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
    ({"w": "nope"}, b"", "malformed"),
])
def test_bad_safetensors_headers(tmp_path, header, data, word):
    p = tmp_path / "x.safetensors"
    _raw_safetensors(p, header, data)
    with pytest.raises(InvalidAdapter, match=word):
        read_header(p)


def test_header_size_cap_and_truncation(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    with pytest.raises(InvalidAdapter, match="cap"):
        read_header(p)
    p.write_bytes(b"abc")
    with pytest.raises(InvalidAdapter, match="shorter"):
        read_header(p)


def test_integer_tensors_are_refused_as_weights(tmp_path):
    p = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(2, dtype=torch.int64)}, str(p))
    with pytest.raises(InvalidAdapter, match="not floating point"):
        load_tensors(p)
    save_file({"w": torch.ones(2, dtype=torch.float16)}, str(p))
    assert load_tensors(p)["w"].dtype == torch.float32


def test_manifest_model_validation_directly():
    m = Manifest(name="x", kind="head", labels=["a", "b"], backbone={"name": "text"},
                 head={"pooling": "mean", "input_dim": 4})
    assert m.task_type == "single_label" and m.format_version == 1
