"""Security properties of the core, proven without a server (issue 4, "Security").

Each test states the property it proves. The HTTP-level proofs (tokens, body caps,
input caps) are in ``test_security_http.py``.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import os
import pickle
import shutil
import tarfile
import tracemalloc
import zipfile
import zlib

import pytest
import torch
from safetensors.torch import load_file, save_file

import adapters.format.safetensors_io as st_io
from adapters.errors import IncompatibleAdapter, InvalidAdapter, InvalidInput, NotFound, TaskswapError
from adapters.format.archive import extract_archive
from adapters.registry import Registry
from adapters.store import open_store
from adapters.store.base import check_name, check_version
from support.factories import head_adapter, peft_lora_dir

MiB = 1 << 20


# ---- archives: bombs that hide in tar headers ---------------------------------------------
def _tar_header(name: str, size: int, type_: bytes, fmt=tarfile.GNU_FORMAT) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.type, ti.size = type_, size
    info = ti.get_info()
    info["magic"] = tarfile.GNU_MAGIC if fmt == tarfile.GNU_FORMAT else tarfile.POSIX_MAGIC
    return tarfile.TarInfo._create_header(info, fmt, "utf-8", "surrogateescape")


def _header_bomb(kind: str, claimed: int, compress: str) -> bytes:
    """A tar whose first header (GNU long name / pax) claims ``claimed`` bytes of metadata.

    ``tarfile`` reads such metadata whole into memory, so before the fix a 70 KB
    tar.gz made the server allocate 64 MiB (and a 64 MiB upload, 64 GB).
    """
    type_ = tarfile.GNUTYPE_LONGNAME if kind == "gnu-longname" else tarfile.XHDTYPE
    body = _tar_header("././@LongLink" if kind == "gnu-longname" else "pax", claimed, type_)
    chunk = (b"a" if kind == "gnu-longname" else b"9") * MiB
    if compress == "gz":
        co = zlib.compressobj(9, zlib.DEFLATED, 31)
    elif compress == "bz2":
        co = bz2.BZ2Compressor(9)
    else:
        co = lzma.LZMACompressor()
    parts = [co.compress(body)] + [co.compress(chunk) for _ in range(claimed // MiB)]
    return b"".join(parts + [co.compress(b"\0" * 1024), co.flush()])


@pytest.mark.parametrize("kind, compress", [("gnu-longname", "gz"), ("pax", "gz"),
                                            ("gnu-longname", "bz2"), ("gnu-longname", "xz")])
def test_tar_header_bombs_stop_at_the_cap_with_bounded_memory(tmp_path, kind, compress):
    data = _header_bomb(kind, 64 * MiB, compress)
    assert len(data) < MiB  # a small upload...
    tracemalloc.start()
    try:
        with pytest.raises(InvalidAdapter, match="decompression bomb"):
            extract_archive(data, tmp_path / "x", max_bytes=MiB, max_entries=64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * MiB, f"extraction peaked at {peak / MiB:.0f} MiB for a {len(data)} B upload"
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_zip_bomb_that_lies_about_its_size_stops_at_the_cap(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("head.safetensors", b"\0" * (32 * MiB))
    data = bytearray(buf.getvalue())
    # rewrite the declared uncompressed size (local header + central directory) to 10 bytes
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = data.find(sig)
        data[i + off:i + off + 4] = (10).to_bytes(4, "little")
    with pytest.raises(InvalidAdapter):
        extract_archive(bytes(data), tmp_path / "x", max_bytes=MiB, max_entries=64)
    written = sum(p.stat().st_size for p in (tmp_path / "x").rglob("*") if p.is_file())
    assert written <= MiB


def test_corrupt_deflate_data_is_a_4xx_not_a_crash(tmp_path, text_backbone):
    """Found by the format fuzzer: zlib.error and ValueError escaped from zip entries."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("adapter.json", json.dumps({"x": list(range(2000))}))
    data = bytearray(buf.getvalue())
    start = data.find(b"adapter.json") + len("adapter.json")
    for i in range(start + 10, start + 60):
        data[i] ^= 0x5A
    with pytest.raises(InvalidAdapter, match="corrupt|zip"):
        extract_archive(bytes(data), tmp_path / "x")


# ---- store references: only paths inside the store ----------------------------------------
@pytest.mark.parametrize("ref", [
    "/etc", "../x", "imports/../../etc", "tasks/../..", "", "a\0b", "x" * 2000, "imports/" + "é" * 200,
    "http://127.0.0.1:1/x", "s3://bucket/adapter", "file:///etc/passwd", ".", "imports/..",
])
def test_store_refs_outside_the_store_are_refused(tmp_path, ref):
    store = open_store(str(tmp_path / "store"))
    with pytest.raises((InvalidInput, NotFound)):
        store.resolve_store_path(ref)


def test_store_ref_through_a_symlink_is_refused(tmp_path):
    store = open_store(str(tmp_path / "store"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (store.root / "imports" / "link").symlink_to(outside)
    (store.root / "imports" / "real").mkdir()
    (store.root / "imports" / "real" / "up").symlink_to(outside)
    for ref in ["imports/link", "imports/real/up"]:
        with pytest.raises(InvalidInput, match="leaves the store"):
            store.resolve_store_path(ref)
    assert store.resolve_store_path("imports/real") == (store.root / "imports" / "real").resolve()


@pytest.mark.parametrize("bad", ["abc\n", "ABC", "../x", "a/../b", "a/b/c", "/a", "a/", "default/a", "",
                                 "a" * 65, "x\0"])
def test_task_names_are_one_path_component_or_a_namespace_and_one(bad):
    with pytest.raises(InvalidInput):
        check_name(bad)


def test_a_qualified_name_is_two_path_components():
    assert check_name("team/task") == "team/task"


def test_versions_are_hex_only():
    with pytest.raises(InvalidInput):
        check_version("deadbeef\n")
    assert check_version("deadbeef") == "deadbeef"


# ---- pickles never reach torch.load; tensors checked before they are materialised ---------
@pytest.fixture
def no_unpickling(monkeypatch):
    """Fail the test if anything calls torch.load or pickle.load(s) during the test."""
    calls = []

    def trap(*a, **k):
        calls.append(a)
        raise AssertionError("a pickle loader was called")
    monkeypatch.setattr(torch, "load", trap)
    monkeypatch.setattr(pickle, "load", trap)
    monkeypatch.setattr(pickle, "loads", trap)
    return calls


@pytest.fixture
def materialised(monkeypatch):
    """Counts safetensors loads (the point where tensor bytes become tensors)."""
    calls = []

    def counting(path, *a, **k):
        calls.append(path)
        return load_file(path, *a, **k)
    monkeypatch.setattr(st_io, "load_file", counting)
    return calls


def _pickle_bytes() -> bytes:
    buf = io.BytesIO()
    pickle.dump({"layers.0.weight": [1.0]}, buf)  # harmless content; the point is the format
    return buf.getvalue()


@pytest.mark.parametrize("name", ["adapter_model.bin", "head.pt", "weights.pkl", "model.ckpt"])
def test_pickle_files_are_refused_unread(tmp_path, registry, text_backbone, no_unpickling, name):
    folder = head_adapter(tmp_path / "a", text_backbone, "a")
    (folder / name).write_bytes(_pickle_bytes())
    with pytest.raises(InvalidAdapter, match="pickle"):
        registry.register(folder)
    assert no_unpickling == []
    assert registry.store.list_aliases() == {}


def test_pickle_renamed_to_safetensors_is_refused_unread(tmp_path, registry, text_backbone,
                                                         no_unpickling, materialised):
    folder = head_adapter(tmp_path / "a", text_backbone, "a")
    (folder / "head.safetensors").write_bytes(_pickle_bytes())
    with pytest.raises(InvalidAdapter, match="safetensors"):
        registry.register(folder)
    assert no_unpickling == [] and materialised == []


def test_peft_dir_with_only_a_bin_is_refused_unread(tmp_path, registry, text_backbone,
                                                    no_unpickling, tiny_dir):
    folder = peft_lora_dir(tmp_path / "p", str(tiny_dir / "text"))
    (folder / "adapter_model.safetensors").unlink()
    (folder / "adapter_model.bin").write_bytes(_pickle_bytes())
    with pytest.raises(InvalidAdapter):
        registry.register(folder, name="p")
    assert no_unpickling == []


def _edit_tensors(path, fn):
    tensors = load_file(str(path))
    fn(tensors)
    save_file(tensors, str(path))


@pytest.mark.parametrize("change, error", [
    (lambda t: t.update({"layers.0.weight": torch.zeros(2, 7)}), InvalidAdapter),      # shape
    (lambda t: t.update({"layers.0.weight": torch.zeros(2, 32, dtype=torch.int32)}), InvalidAdapter),
    (lambda t: t.update({"extra": torch.zeros(3)}), InvalidAdapter),                  # unknown key
    (lambda t: t.pop("layers.0.bias"), InvalidAdapter),                                # missing
])
def test_head_tensors_checked_before_materialising(tmp_path, registry, text_backbone, materialised,
                                                   change, error):
    folder = head_adapter(tmp_path / "a", text_backbone, "a")
    _edit_tensors(folder / "head.safetensors", change)
    with pytest.raises(error):
        registry.register(folder)
    assert materialised == []


def test_lora_shapes_checked_before_materialising(tmp_path, registry, tiny_dir, materialised):
    folder = peft_lora_dir(tmp_path / "p", str(tiny_dir / "text"))

    def widen(t):
        key = next(k for k in t if k.endswith("lora_A.weight"))
        t[key] = torch.zeros(t[key].shape[0], t[key].shape[1] + 1)
    _edit_tensors(folder / "adapter_model.safetensors", widen)
    with pytest.raises(IncompatibleAdapter, match="do not fit"):
        registry.register(folder, name="p")
    assert materialised == []


def test_safetensors_header_cap_refuses_before_reading(tmp_path, registry, text_backbone, materialised):
    folder = head_adapter(tmp_path / "a", text_backbone, "a")
    (folder / "head.safetensors").write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    with pytest.raises(InvalidAdapter, match="header"):
        registry.register(folder)
    assert materialised == []


def test_non_finite_weights_are_refused(tmp_path, registry, text_backbone):
    folder = head_adapter(tmp_path / "a", text_backbone, "a")
    _edit_tensors(folder / "head.safetensors", lambda t: t["layers.0.weight"].__setitem__((0, 0), float("nan")))
    with pytest.raises(InvalidAdapter, match="NaN"):
        registry.register(folder)


# ---- hostile metadata: every refusal is a TaskswapError (a 4xx), never a crash ------------
def _manifest_edit(fn):
    def apply(folder):
        m = json.loads((folder / "adapter.json").read_text())
        fn(m)
        (folder / "adapter.json").write_text(json.dumps(m))
    return apply


def _raw(name, text):
    return lambda folder: (folder / name).write_text(text)


HOSTILE_HEADS = {
    "manifest NaN literal": _raw("adapter.json", '{"name": NaN}'),
    "manifest Infinity in metrics": lambda f: (f / "adapter.json").write_text(
        (f / "adapter.json").read_text().replace('"val_accuracy": 0.5', '"val_accuracy": Infinity')),
    "manifest nested 100k deep": _raw("adapter.json", "[" * 100_000 + "]" * 100_000),
    "manifest not an object": _raw("adapter.json", "[1, 2]"),
    "manifest not utf-8": lambda f: (f / "adapter.json").write_bytes(b"\xff\xfe\x00"),
    "labels not unique": _manifest_edit(lambda m: m.update(labels=["a", "a"])),
    "labels too many for the head": _manifest_edit(lambda m: m.update(labels=list("abc"))),
    "hidden width 10^12": _manifest_edit(lambda m: m["head"].update(hidden=[10 ** 12])),
    "kind unknown": _manifest_edit(lambda m: m.update(kind="script")),
    "name with a path": _manifest_edit(lambda m: m.update(name="../../etc")),
    "name with a newline": _manifest_edit(lambda m: m.update(name="abc\n")),
    "format from the future": _manifest_edit(lambda m: m.update(format_version=99)),
    "backbone unknown": _manifest_edit(lambda m: m.update(backbone={"name": "nope", "fingerprint": "x"})),
    "safetensors header 5000 deep": lambda f: (f / "head.safetensors").write_bytes(
        (10_006).to_bytes(8, "little") + b"{\"a\":" + b"[" * 5000 + b"]" * 5000 + b"}"),
    "safetensors header not json": lambda f: (f / "head.safetensors").write_bytes(
        (4).to_bytes(8, "little") + b"\xff\xff\xff\xff"),
    "a sub-folder": lambda f: (f / "sub").mkdir(),
    "an executable": _raw("run.sh", "#!/bin/sh\nrm -rf /\n"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_HEADS))
def test_hostile_head_adapters_get_a_typed_error_and_leave_the_store_untouched(
        tmp_path, registry, text_backbone, case):
    folder = head_adapter(tmp_path / "a", text_backbone, "a")
    HOSTILE_HEADS[case](folder)
    with pytest.raises(TaskswapError):
        registry.register(folder)
    root = registry.store.root
    assert registry.store.list_aliases() == {}
    assert not any((root / "tasks").iterdir()) and not any((root / "staging").iterdir())


HOSTILE_PEFT_CONFIGS = {
    "lora_alpha a string": {"lora_alpha": "abc"},
    "alpha_pattern invalid regex": {"alpha_pattern": {"(": 4}},
    "alpha_pattern value a string": {"alpha_pattern": {"query": "x"}},
    "alpha_pattern not an object": {"alpha_pattern": [1, 2]},
    "rank_pattern key too long": {"rank_pattern": {"q" * 300: 4}},
    "r zero": {"r": 0},
    "DoRA": {"use_dora": True},
    "peft_type prefix tuning": {"peft_type": "PREFIX_TUNING"},
    "task_type QUESTION_ANS": {"task_type": "QUESTION_ANS"},
    "task_type not a string": {"task_type": ["SEQ_CLS"]},
    "bias all": {"bias": "all"},
    "r true": {"r": True},
    "r 2 with rank-4 tensors": {"r": 2},
    "r a float": {"r": 4.0},
    "rank_pattern 2 with rank-4 tensors": {"rank_pattern": {"query": 2}},
    "rank_pattern value true": {"rank_pattern": {"query": True}},
    "alpha_pattern catastrophic regex": {"alpha_pattern": {r"(?:.*?){20}\d\d": 4}},
    "rank_pattern catastrophic regex": {"rank_pattern": {r"(.*){1,32000}[bc]": 4}},
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PEFT_CONFIGS))
def test_hostile_peft_configs_get_a_typed_error(tmp_path, registry, tiny_dir, case):
    folder = peft_lora_dir(tmp_path / "p", str(tiny_dir / "text"))
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg.update(HOSTILE_PEFT_CONFIGS[case])
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(InvalidAdapter):
        registry.register(folder, name="p")
    assert registry.store.list_aliases() == {}


def test_a_causal_lm_lora_on_an_encoder_is_refused_as_incompatible(tmp_path, registry, tiny_dir):
    """A ``CAUSAL_LM`` config is a generation task now: on an encoder it fits no language model."""
    folder = peft_lora_dir(tmp_path / "p", str(tiny_dir / "text"))
    cfg = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**cfg, "task_type": "CAUSAL_LM"}))
    with pytest.raises(IncompatibleAdapter, match="needs a language-model backbone"):
        registry.register(folder, name="p")
    assert registry.store.list_aliases() == {}


def test_patterns_are_resolved_once_at_registration_and_never_matched_at_load(
        tmp_path, registry, tiny_dir, backbones, monkeypatch):
    import adapters.lora.patterns as patterns
    folder = peft_lora_dir(tmp_path / "p", str(tiny_dir / "text"), r=4,
                           rank_pattern={"query": 2}, alpha_pattern={"value": 16})
    loaded = registry.register(folder, name="p", labels=["a", "b"])
    stored = json.loads((registry.store.version_path("p", loaded.version) / "adapter.json").read_text())
    mods = stored["lora_modules"]
    assert mods["bert.encoder.layer.0.attention.self.query"] == {"r": 2, "alpha": 8}
    assert mods["bert.encoder.layer.1.attention.self.value"] == {"r": 4, "alpha": 16}

    def no_matching(*a, **k):
        raise AssertionError("a pattern was matched while loading a stored version")
    monkeypatch.setattr(patterns, "resolve_modules", no_matching)
    fresh = Registry(registry.store, backbones)
    fresh.sync()
    again = fresh.resolve("p")
    for name, m in loaded.lora.modules.items():
        assert torch.equal(again.lora.modules[name].B, m.B)


def test_modules_to_save_other_than_the_classifier_are_refused(tmp_path, registry, tiny_dir):
    """Weights the runtime would silently not apply (here a saved pooler) are a 422."""
    folder = peft_lora_dir(tmp_path / "p", str(tiny_dir / "text"))
    tensors = load_file(folder / "adapter_model.safetensors")
    tensors["base_model.model.bert.pooler.dense.weight"] = torch.zeros(32, 32)
    save_file(tensors, folder / "adapter_model.safetensors")
    with pytest.raises(InvalidAdapter, match="pooler.dense.weight"):
        registry.register(folder, name="p")  # a 422 whatever the backbone, not "fits none" (409)
    assert registry.store.list_aliases() == {}


def test_peft_config_nan_literal_is_refused(tmp_path, registry, tiny_dir):
    folder = peft_lora_dir(tmp_path / "p", str(tiny_dir / "text"))
    text = (folder / "adapter_config.json").read_text()
    (folder / "adapter_config.json").write_text(text.replace('"lora_alpha": 8', '"lora_alpha": NaN'))
    assert "NaN" in (folder / "adapter_config.json").read_text()
    with pytest.raises(InvalidAdapter, match="NaN"):
        registry.register(folder, name="p")


@pytest.mark.parametrize("size", ["abc", [96], True, 96.5])
def test_junk_image_size_in_a_manifest_is_refused(tmp_path, registry, vision_backbone, size):
    folder = head_adapter(tmp_path / "v", vision_backbone, "v")
    _manifest_edit(lambda m: m["preprocessing"].update(image_size=size))(folder)
    with pytest.raises(IncompatibleAdapter, match="image_size"):
        registry.register(folder)


def test_a_valid_adapter_still_registers_after_all_that(tmp_path, registry, text_backbone):
    """The checks above refuse hostile input, not ordinary adapters (a test that can fail)."""
    loaded = registry.register(head_adapter(tmp_path / "ok", text_backbone, "ok"))
    assert registry.resolve("ok").version == loaded.version
    assert os.path.isdir(registry.store.version_path("ok", loaded.version))
    shutil.rmtree(tmp_path / "ok")
