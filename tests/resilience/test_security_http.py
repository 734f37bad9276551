"""Security properties over real HTTP (issue 4, "Security"), against ``bentoml serve``.

One server with both tokens and deliberately small caps, one with no admin token.
Every hostile request must get the documented 4xx naming the problem — never a 500,
never a hang — and the server log must stay free of tracebacks.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import secrets
import struct
import tarfile
import zipfile
import zlib

import pytest
from PIL import Image

from adapters.format.archive import make_archive
from support.factories import head_adapter
from support.http_helpers import assert_error
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server

KiB, MiB = 1 << 10, 1 << 20
LIMITS = {"TASKSWAP_MAX_UPLOAD_BYTES": str(256 * KiB), "TASKSWAP_MAX_ARCHIVE_BYTES": str(MiB),
          "TASKSWAP_MAX_ARCHIVE_ENTRIES": "16", "TASKSWAP_MAX_INPUTS": "8",
          "TASKSWAP_MAX_TEXT_CHARS": "500", "TASKSWAP_MAX_IMAGE_BYTES": str(32 * KiB),
          "TASKSWAP_MAX_IMAGE_PIXELS": "250000"}
INFERENCE = secrets.token_hex(16)


@pytest.fixture(scope="module")
def srv(server_factory, tiny_dir, tmp_path_factory, text_backbone, vision_backbone):
    """Admin + inference tokens, small caps, one text task 'ok' and one image task 'img'."""
    s = server_factory.start(store=tmp_path_factory.mktemp("store"), backbones=tiny_backbones_env(tiny_dir),
                             env={**LIMITS, "TASKSWAP_INFERENCE_TOKEN": INFERENCE})
    root = tmp_path_factory.mktemp("adapters")
    for name, bb in (("ok", text_backbone), ("img", vision_backbone)):
        r = s.register_archive(make_archive(head_adapter(root / name, bb, name)))
        assert r.status_code == 201, r.text
    return s


@pytest.fixture(scope="module")
def no_admin(server_factory, tiny_dir, tmp_path_factory, text_backbone):
    """A server started without TASKSWAP_ADMIN_TOKEN (and without an inference token)."""
    store = tmp_path_factory.mktemp("store-noadmin")
    # A task put in the store directly, as an operator's tooling would: the server serves it.
    from adapters.registry import Registry
    from adapters.store import open_store
    Registry(open_store(str(store)), {"text": text_backbone}).register(
        head_adapter(tmp_path_factory.mktemp("a") / "t", text_backbone, "t"))
    return server_factory.start(store=store, backbones=tiny_backbones_env(tiny_dir), admin_token=None)


# ---- admin scope separate from inference ----------------------------------------------------
ADMIN_CALLS = [("POST", "/adapters", {"json": {"store_path": "imports/x"}}),
               ("POST", "/adapters/ok/activate", {"json": {"version": "deadbeef"}}),
               ("POST", "/adapters/ok/pin", {"json": {"pinned": True}}),
               ("DELETE", "/adapters/ok", {})]
READ_CALLS = [("POST", "/predict", {"json": {"task": "ok", "texts": ["good"]}}),
              ("GET", "/adapters", {}), ("GET", "/adapters/ok", {}), ("GET", "/backbones", {})]


@pytest.mark.parametrize("method, path, kw", ADMIN_CALLS)
def test_admin_calls_need_the_admin_token(srv, method, path, kw):
    none = {"Authorization": ""}  # no token at all (the helper would add the inference one)
    assert_error(srv.request(method, path, headers=none, **kw), 401, "missing bearer token")
    assert_error(srv.request(method, path, token="x" * 32, **kw), 401, "wrong bearer token")
    assert_error(srv.request(method, path, token=INFERENCE, **kw), 403, "inference token")
    off = srv.admin[:-1] + ("1" if srv.admin[-1] == "0" else "0")  # one character off
    r = srv.request(method, path, token=off, **kw)
    assert_error(r, 401, "wrong")
    assert_error(srv.request(method, path, headers={"Authorization": f"Basic {srv.admin}"}, **kw), 401, "Bearer")
    assert srv.get("/adapters/ok").json()["name"] == "ok"  # nothing above changed anything


@pytest.mark.parametrize("method, path, kw", READ_CALLS)
def test_reads_need_the_inference_token_when_one_is_set(srv, method, path, kw):
    assert_error(srv.request(method, path, headers={"Authorization": ""}, **kw), 401, "missing")
    assert_error(srv.request(method, path, token="y" * 32, **kw), 401, "wrong")
    assert srv.request(method, path, token=INFERENCE, **kw).status_code == 200
    assert srv.request(method, path, token=srv.admin, **kw).status_code == 200  # admin is a superset


def test_without_an_admin_token_admin_calls_are_refused_and_reads_open(no_admin):
    for method, path, kw in ADMIN_CALLS:
        for token in (None, "z" * 32):
            r = no_admin.request(method, path.replace("/ok", "/t"), token=token, **kw)
            assert_error(r, 403, "no admin token is configured")
    r = no_admin.post("/predict", json={"task": "t", "texts": ["good movie"]})
    assert r.status_code == 200 and r.json()["results"][0]["task"] == "t"
    assert [a["name"] for a in no_admin.get("/adapters").json()["adapters"]] == ["t"]
    assert no_admin.internal_errors() == []


def test_tokens_are_compared_in_constant_time_against_every_token(monkeypatch):
    """The comparison goes through hmac.compare_digest, once per configured token, whatever
    matches — so response time says nothing about which token (or how much of it) matched."""
    from pydantic import SecretStr

    import service.auth as auth
    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)
    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    a = auth.Auth(SecretStr("A" * 32), SecretStr("B" * 32))
    for token in ("A" * 32, "B" * 32, "C" * 32, "A" * 31):
        calls.clear()
        try:
            a.require("read", f"Bearer {token}")
        except Exception:
            pass
        assert len(calls) == 2, f"{token[:4]}: {len(calls)} comparisons"


# ---- uploads ---------------------------------------------------------------------------------
def _zip(entries, method=zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as zf:
        for name, data in entries:
            if isinstance(name, zipfile.ZipInfo):
                zf.writestr(name, data)
            else:
                zf.writestr(name, data)
    return buf.getvalue()


def _symlink_zip() -> bytes:
    info = zipfile.ZipInfo("adapter.json")
    info.external_attr = 0o120777 << 16
    return _zip([(info, "/etc/passwd")])


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, type_, data, link in members:
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname, ti.size = type_, link, len(data or b"")
            tf.addfile(ti, io.BytesIO(data) if data else None)
    return buf.getvalue()


def _longname_bomb(claimed: int) -> bytes:
    ti = tarfile.TarInfo("././@LongLink")
    ti.type, ti.size = tarfile.GNUTYPE_LONGNAME, claimed
    info = ti.get_info()
    info["magic"] = tarfile.GNU_MAGIC
    co = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [co.compress(tarfile.TarInfo._create_header(info, tarfile.GNU_FORMAT, "utf-8", "strict"))]
    parts += [co.compress(b"a" * MiB) for _ in range(claimed // MiB)]
    return b"".join(parts + [co.flush()])


HOSTILE_UPLOADS = {
    "zip slip": (_zip([("../../evil.json", "{}")]), "'..'"),
    "absolute path": (_zip([("/etc/cron.d/x.json", "{}")]), "absolute"),
    "zip symlink": (_symlink_zip(), "link"),
    "tar symlink": (_tar([("adapter.json", tarfile.SYMTYPE, None, "/etc/passwd")]), "link"),
    "tar hard link": (_tar([("adapter.json", tarfile.LNKTYPE, None, "/etc/passwd")]), "link"),
    "tar device": (_tar([("dev", tarfile.CHRTYPE, None, "")]), "not a regular file"),
    "too many entries": (_zip([(f"f{i}.json", "{}") for i in range(40)]), "entries"),
    "zip bomb": (_zip([("head.safetensors", b"\0" * (8 * MiB))]), "decompression bomb"),
    "tar.gz bomb": (_tar([("head.safetensors", tarfile.REGTYPE, b"\0" * (8 * MiB), "")]), "decompression bomb"),
    "tar long-name bomb": (_longname_bomb(64 * MiB), "decompression bomb"),
    "pickle": (_zip([("adapter_model.bin", b"\x80\x04K\x01.")]), "pickle"),
    "not an archive": (b"MZ\x90\x00 this is an exe", "not a zip"),
    "empty zip": (_zip([]), "not an adapter"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_UPLOADS))
def test_hostile_uploads_get_422(srv, case):
    data, word = HOSTILE_UPLOADS[case]
    assert len(data) < 256 * KiB  # under the body cap: the archive checks refuse it
    assert_error(srv.register_archive(data, filename="x.zip", name="evil"), 422, word)
    assert "evil" not in [a["name"] for a in srv.get("/adapters").json()["adapters"]]


def test_body_over_the_upload_cap_gets_413_declared_or_chunked(srv):
    big = b"\0" * (300 * KiB)
    assert_error(srv.register_archive(big, filename="big.zip"), 413, "larger than")

    def chunks():  # no Content-Length: the cap is counted as the body arrives
        yield (b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.zip"\r\n'
               b"Content-Type: application/zip\r\n\r\n")
        for _ in range(8):
            yield b"\0" * (64 * KiB)
        yield b"\r\n--xyz--\r\n"
    r = srv.post("/adapters", admin=True, content=chunks(),
                 headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert_error(r, 413, "larger than")
    r = srv.post("/predict", content=json.dumps({"task": "ok", "texts": ["a" * 400] * 700}),
                 headers={"Content-Type": "application/json"})
    assert_error(r, 413, "larger than")


@pytest.mark.parametrize("ref, status", [
    ("/etc", 400), ("../../etc", 400), ("imports/../../..", 400), ("imports/a\u0000b", 400),
    ("http://127.0.0.1:1/adapter", 404), ("s3://bucket/adapter", 404), ("file:///etc/passwd", 404),
    ("imports/escape", 400), ("imports/nothing-here", 404), ("tasks", 422),
])
def test_store_references_stay_inside_the_store(srv, ref, status):
    from pathlib import Path
    escape = Path(srv.store) / "imports" / "escape"
    if not escape.is_symlink():
        escape.symlink_to("/etc")
    r = srv.post("/adapters", admin=True, json={"store_path": ref})
    assert_error(r, status)


# ---- inputs ------------------------------------------------------------------------------------
def _png(size=(20, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def _png_claiming(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (a decompression bomb's first bytes)."""
    data = bytearray(_png((1, 1)))
    ihdr = struct.pack(">II", w, h) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


BAD_INPUTS = {
    "too many texts": ({"task": "ok", "texts": ["a"] * 9}, 400, "at most 8"),
    "text too long": ({"task": "ok", "texts": ["a" * 501]}, 400, "at most 500"),
    "empty text": ({"task": "ok", "texts": ["  "]}, 400, "empty"),
    "no inputs": ({"task": "ok", "texts": []}, 400, "empty"),
    "texts and images": ({"task": "ok", "texts": ["a"], "images": ["x"]}, 422, "exactly one"),
    "unknown field": ({"task": "ok", "text": ["a"]}, 422, "text"),
    "texts not strings": ({"task": "ok", "texts": [1, {"a": 2}]}, 422, "texts"),
    "task wrong type": ({"task": ["ok"], "texts": ["a"]}, 422, "task"),
    "unknown task": ({"task": "nope", "texts": ["a"]}, 404, "not registered"),
    "task name with a path": ({"task": "../../etc", "texts": ["a"]}, 404, "not registered"),
    "images to a text task": ({"task": "ok", "images": [b64(_png())]}, 400, "takes texts"),
    "texts to an image task": ({"task": "img", "texts": ["a"]}, 400, "takes images"),
    "bad base64": ({"task": "img", "images": ["!!not base64!!"]}, 400, "base64"),
    "base64 of junk": ({"task": "img", "images": [b64(b"GIF89a junk junk")]}, 400, "not a decodable image"),
    "truncated png": ({"task": "img", "images": [b64(_png((64, 64))[:60])]}, 400, "images[0]"),
    "pixel bomb": ({"task": "img", "images": [b64(_png_claiming(40_000, 40_000))]}, 400, "pixels"),
    "image over the byte cap": ({"task": "img", "images": [b64(b"\x89PNG" + b"\0" * (40 * KiB))]}, 400, "larger than"),
    "eps (ghostscript) refused": ({"task": "img", "images": [b64(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n")]},
                                  400, "not a decodable image"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_inputs_get_a_4xx_naming_the_problem(srv, case):
    body, status, word = BAD_INPUTS[case]
    assert_error(srv.post("/predict", json=body), status, word)


MALFORMED_JSON = {"syntax": b"{bad json", "empty": b"", "not utf-8": b"\xff\xfe",
                  "10000 deep": b"[" * 10000, "truncated": b'{"task": "ok", "texts": ["a"]'}


@pytest.mark.parametrize("case", sorted(MALFORMED_JSON))
def test_malformed_json_gets_a_4xx(srv, case):
    r = srv.post("/predict", content=MALFORMED_JSON[case], headers={"Content-Type": "application/json"})
    # 422 from our validation; FastAPI answers a parser RecursionError with its own 400
    assert_error(r, 400 if case == "10000 deep" else 422)


def test_long_text_under_the_cap_is_truncated_not_refused(srv):
    """Texts up to max_text_chars are accepted and truncated to the backbone's max_length tokens."""
    r = srv.post("/predict", json={"task": "ok", "texts": ["good " * 99, "good " * 40]})
    assert r.status_code == 200, r.text
    a, b = (p["scores"] for p in r.json()["results"][0]["predictions"])
    assert a == pytest.approx(b, abs=1e-5)  # both exceed 32 tokens: identical after truncation


def test_multipart_image_uploads_are_checked_too(srv):
    files = [("files", ("bomb.png", _png_claiming(40_000, 40_000), "image/png"))]
    assert_error(srv.post("/predict/upload", files=files, data={"task": "img"}), 400, "pixels")
    files = [("files", (f"{i}.png", _png(), "image/png")) for i in range(9)]
    assert_error(srv.post("/predict/upload", files=files, data={"task": "img"}), 400, "at most 8")
    r = srv.post("/predict/upload", files=[("files", ("a.png", _png(), "image/png"))], data={"task": "img"})
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["/adapters/%00", "/adapters/..%2F..%2Fetc", "/adapters/" + "a" * 65,
                                  "/adapters/ABC", "/adapters/a%0A"])
def test_odd_task_names_in_paths(srv, path):
    r = srv.get(path)
    assert r.status_code in (400, 404, 422), r.text


def test_the_server_logged_no_internal_error(srv, no_admin):
    """Runs last in this module: none of the hostile requests above produced a 500."""
    assert srv.internal_errors() == [] and no_admin.internal_errors() == []
