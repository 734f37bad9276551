"""Every bad input gets a 4xx whose message names the problem; never a 500, never a hang.

One server with small limits and both tokens configured; each case asserts the status
AND a word of the message. At the end the server log must hold no traceback and no 500.
"""

from __future__ import annotations

import base64
import io
import json
import secrets
import shutil
import tarfile
import threading
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from adapters.format.archive import make_archive
from support.factories import head_adapter, peft_lora_dir
from support.server import server_factory, tiny_backbones_env  # noqa: F401  (pytest fixture)

pytestmark = pytest.mark.server

LIMITS = {"TASKSWAP_MAX_INPUTS": "4", "TASKSWAP_MAX_TEXT_CHARS": "200",
          "TASKSWAP_MAX_IMAGE_BYTES": "4096", "TASKSWAP_MAX_IMAGE_PIXELS": "10000",
          "TASKSWAP_MAX_UPLOAD_BYTES": str(1 << 20), "TASKSWAP_MAX_ARCHIVE_ENTRIES": "8",
          # A request alone is always admitted; one arriving while another waits out the
          # 300 ms batching window finds the 1-row queue full: 429.
          "TASKSWAP_MAX_QUEUE_ROWS": "1", "TASKSWAP_MAX_WAIT_MS": "300"}
INFERENCE = secrets.token_hex(16)


def png(size=(40, 30), noise=False) -> bytes:
    im = Image.frombytes("RGB", size, secrets.token_bytes(size[0] * size[1] * 3)) if noise \
        else Image.new("RGB", size, (200, 30, 30))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def zip_of(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def tar_with_symlink(folder) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for p in sorted(folder.iterdir()):
            tf.add(p, arcname=p.name)
        link = tarfile.TarInfo("README.md.link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    return buf.getvalue()


def files_of(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def ctx(server_factory, tiny_dir, text_backbone, vision_backbone, tmp_path_factory):
    """A limited server with a text task 'txt' and an image task 'img', plus adapter folders."""
    store = tmp_path_factory.mktemp("store")
    srv = server_factory.start(store=store, backbones=tiny_backbones_env(tiny_dir),
                               env={**LIMITS, "TASKSWAP_INFERENCE_TOKEN": INFERENCE})
    tmp = tmp_path_factory.mktemp("adapters")
    good = head_adapter(tmp / "good", text_backbone, "txt", seed=1)
    for folder in (good, head_adapter(tmp / "img", vision_backbone, "img", seed=2)):
        r = srv.register_archive(make_archive(folder))
        assert r.status_code == 201, r.text
    peft = peft_lora_dir(tmp / "peft", str(text_backbone.source_path), seed=3)
    nowhere = tmp / "nowhere"
    shutil.copytree(peft, nowhere)
    from safetensors.torch import load_file, save_file
    weights = load_file(str(nowhere / "adapter_model.safetensors"))
    save_file({k.replace("attention.self", "nowhere"): v for k, v in weights.items()},
              str(nowhere / "adapter_model.safetensors"))
    other_fp = tmp / "other-fp"
    shutil.copytree(good, other_fp)
    manifest = json.loads((other_fp / "adapter.json").read_text())
    manifest["backbone"]["fingerprint"] = "sha256:" + "0" * 64
    (other_fp / "adapter.json").write_text(json.dumps(manifest))
    wide = head_adapter(tmp / "wide", vision_backbone, "wide", seed=4)  # 320-d head
    wide_manifest = json.loads((wide / "adapter.json").read_text())
    wide_manifest["backbone"] = {"name": "text", "fingerprint": text_backbone.fingerprint}
    (wide / "adapter.json").write_text(json.dumps(wide_manifest))
    bad_kind = tmp / "bad-kind"
    shutil.copytree(good, bad_kind)
    (bad_kind / "adapter.json").write_text(json.dumps({**json.loads((good / "adapter.json").read_text()),
                                                        "kind": "adapterx"}))
    (store / "imports").mkdir(exist_ok=True)
    return {"srv": srv, "good": good, "peft": peft, "nowhere": nowhere, "other_fp": other_fp,
            "wide": wide, "bad_kind": bad_kind}


def upload(archive: bytes, **fields):
    return lambda srv: srv.register_archive(archive, **fields)


def predict(body: dict):
    return lambda srv: srv.post("/predict", json=body)


TEXTS = {"task": "txt", "texts": ["good movie"]}

# (id, request builder given (srv, ctx), status, a word the message must contain)
CASES = [
    # ---- prediction -------------------------------------------------------------------
    ("unknown task", lambda c: predict({"task": "nope", "texts": ["x"]}), 404, "not registered"),
    ("texts to an image task", lambda c: predict({"task": "img", "texts": ["x"]}), 400, "takes images"),
    ("images to a text task", lambda c: predict({"task": "txt", "images": [b64(png())]}), 400, "takes texts"),
    ("tasks on two backbones", lambda c: predict({"tasks": ["txt", "img"], "texts": ["x"]}), 400,
     "different backbones"),
    ("task named twice", lambda c: predict({"tasks": ["txt", "txt"], "texts": ["x"]}), 400, "twice"),
    ("undecodable image", lambda c: predict({"task": "img", "images": [b64(b"hello, not an image")]}),
     400, "decodable"),
    ("truncated image", lambda c: predict({"task": "img", "images": [b64(png(noise=True, size=(30, 30))[:300])]}),
     400, "decodable"),
    ("invalid base64", lambda c: predict({"task": "img", "images": ["%%%not base64%%%"]}), 400, "base64"),
    ("empty texts", lambda c: predict({"task": "txt", "texts": []}), 400, "empty"),
    ("blank text", lambda c: predict({"task": "txt", "texts": ["ok", "   "]}), 400, "texts[1] is empty"),
    ("empty images", lambda c: predict({"task": "img", "images": []}), 400, "empty"),
    ("too many inputs", lambda c: predict({"task": "txt", "texts": ["a"] * 5}), 400, "at most 4"),
    ("text too long", lambda c: predict({"task": "txt", "texts": ["a" * 201]}), 400, "201 characters"),
    ("image too many pixels", lambda c: predict({"task": "img", "images": [b64(png((200, 200)))]}), 400,
     "pixels"),
    ("image too many bytes", lambda c: predict({"task": "img", "images": [b64(png((60, 60), noise=True))]}),
     400, "bytes"),
    ("texts and images", lambda c: predict({"task": "txt", "texts": ["x"], "images": ["x"]}), 422,
     "exactly one of 'texts', 'images' or 'audio'"),
    ("no task", lambda c: predict({"texts": ["x"]}), 422, "exactly one of 'task'"),
    ("unknown field", lambda c: predict({"task": "txt", "text": ["x"]}), 422, "text: Extra inputs"),
    ("texts not a list", lambda c: predict({"task": "txt", "texts": "hello"}), 422, "texts"),
    ("invalid JSON", lambda c: lambda srv: srv.post("/predict", content=b"{nope",
                                                     headers={"content-type": "application/json"}),
     422, "not valid JSON"),
    ("upload without files", lambda c: lambda srv: srv.post("/predict/upload", data={"task": "img"},
                                                            files={"other": ("x", b"x")}), 422, "files"),
    ("upload undecodable file", lambda c: lambda srv: srv.post(
        "/predict/upload", data={"task": "img"}, files={"files": ("x.png", b"GIF89a-broken")}), 400,
     "'x.png'"),
    ("upload to a text task", lambda c: lambda srv: srv.post(
        "/predict/upload", data={"task": "txt"}, files={"files": ("x.png", png())}), 400, "takes texts"),
    ("body over the upload limit", lambda c: predict({"task": "txt", "texts": ["a" * (1 << 20)]}), 413,
     "larger than"),
    ("chunked body over the limit", lambda c: lambda srv: srv.post(
        "/predict", content=iter([b'{"task": "txt", "texts": ["'] + [b"a" * 65536] * 20 + [b'"]}']),
        headers={"content-type": "application/json"}), 413, "larger than"),
    # ---- registration -----------------------------------------------------------------
    ("pickle in archive", lambda c: upload(zip_of({**files_of(c["good"]), "extra.bin": b"\x80\x04N."})),
     422, "pickle"),
    ("dot-dot path", lambda c: upload(zip_of({"../evil.json": b"{}", **files_of(c["good"])})), 422, "'..'"),
    ("absolute path", lambda c: upload(zip_of({"/etc/evil.json": b"{}"})), 422, "absolute"),
    ("symlink in tar", lambda c: upload(tar_with_symlink(c["good"]), filename="a.tar.gz"), 422, "link"),
    ("too many entries", lambda c: upload(zip_of({f"f{i}.txt": b"x" for i in range(9)})), 422, "entries"),
    ("not an archive", lambda c: upload(b"just some bytes, not an archive"), 422, "archive"),
    ("empty archive file", lambda c: upload(b""), 400, "empty"),
    ("archive over the upload limit", lambda c: upload(secrets.token_bytes((1 << 20) + 10)), 413,
     "larger than"),
    ("lora matching no module", lambda c: upload(make_archive(c["nowhere"]), name="nowhere"), 409,
     "no such module"),
    ("fingerprint mismatch", lambda c: upload(make_archive(c["other_fp"])), 409, "fingerprint"),
    ("head shapes do not fit the backbone", lambda c: upload(make_archive(c["wide"])), 409, "input_dim"),
    ("invalid manifest", lambda c: upload(make_archive(c["bad_kind"])), 422, "kind"),
    ("plain peft without a name", lambda c: upload(make_archive(c["peft"])), 400, "name="),
    ("plain peft labels mismatch", lambda c: upload(make_archive(c["peft"]), name="p", labels=["a", "b", "c"]),
     400, "2 outputs"),
    ("unknown backbone", lambda c: upload(make_archive(c["peft"]), name="p", backbone="nope"), 400,
     "not served"),
    ("bad labels field", lambda c: upload(make_archive(c["peft"]), name="p", labels='["a", 1'), 400, "labels"),
    ("invalid task name", lambda c: upload(make_archive(c["peft"]), name="Bad Name!"), 400, "task name"),
    ("invalid name override on a head", lambda c: upload(make_archive(c["good"]), name="Bad Name!"), 400,
     "task name"),
    ("duplicate labels", lambda c: upload(make_archive(c["good"]), labels=["a", "a"]), 400, "unique"),
    ("no file field", lambda c: lambda srv: srv.post("/adapters", admin=True, data={"name": "x"},
                                                     files={"other": ("x", b"x")}), 400, "'file'"),
    ("wrong content type", lambda c: lambda srv: srv.post("/adapters", admin=True, content=b"x",
                                                          headers={"content-type": "text/plain"}),
     400, "content type"),
    ("store path with ..", lambda c: lambda srv: srv.post("/adapters", admin=True,
                                                          json={"store_path": "../../etc"}), 400, "'..'"),
    ("store path absolute", lambda c: lambda srv: srv.post("/adapters", admin=True,
                                                           json={"store_path": "/etc"}), 400, "relative"),
    ("store path missing", lambda c: lambda srv: srv.post("/adapters", admin=True,
                                                          json={"store_path": "imports/none"}), 404,
     "does not exist"),
    ("store path unknown field", lambda c: lambda srv: srv.post(
        "/adapters", admin=True, json={"store_path": "imports/x", "nme": "y"}), 422, "nme"),
    # ---- lifecycle ----------------------------------------------------------------------
    ("activate unknown task", lambda c: lambda srv: srv.post("/adapters/nope/activate", admin=True,
                                                             json={"version": "a" * 8}), 404, "not registered"),
    ("activate unknown version", lambda c: lambda srv: srv.post("/adapters/txt/activate", admin=True,
                                                                json={"version": "0" * 12}), 404, "does not exist"),
    ("activate non-hex version", lambda c: lambda srv: srv.post("/adapters/txt/activate", admin=True,
                                                                json={"version": "zzzzzzzz"}), 400, "version"),
    ("activate short version", lambda c: lambda srv: srv.post("/adapters/txt/activate", admin=True,
                                                              json={"version": "abc"}), 422, "version"),
    ("activate without body", lambda c: lambda srv: srv.post("/adapters/txt/activate", admin=True), 422,
     "Field required"),
    ("delete unknown task", lambda c: lambda srv: srv.delete("/adapters/nope", admin=True), 404, "not registered"),
    ("pin unknown task", lambda c: lambda srv: srv.post("/adapters/nope/pin", admin=True), 404, "not registered"),
    ("show unknown task", lambda c: lambda srv: srv.get("/adapters/nope"), 404, "not registered"),
    ("show invalid name", lambda c: lambda srv: srv.get("/adapters/Bad%20Name"), 400, "task name"),
    ("wrong method", lambda c: lambda srv: srv.get("/predict"), 405, "use POST"),
    ("unknown endpoint", lambda c: lambda srv: srv.get("/nothing/here"), 404, "no endpoint"),
    ("task name with a newline", lambda c: lambda srv: srv.get("/adapters/a%0Ab"), 404, "no endpoint"),
    # ---- auth ---------------------------------------------------------------------------
    ("predict without token", lambda c: lambda srv: srv.post("/predict", json=TEXTS,
                                                             headers={"Authorization": ""}), 401, "missing bearer"),
    ("predict with a wrong token", lambda c: lambda srv: srv.post("/predict", json=TEXTS, token="x" * 32),
     401, "wrong bearer token"),
    ("basic auth instead of bearer", lambda c: lambda srv: srv.post(
        "/predict", json=TEXTS, headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401, "Bearer"),
    ("list without token", lambda c: lambda srv: srv.get("/adapters", headers={"Authorization": ""}), 401,
     "missing bearer"),
    ("admin call with the inference token", lambda c: lambda srv: srv.delete("/adapters/txt", token=INFERENCE),
     403, "inference token"),
    ("admin call without token", lambda c: lambda srv: srv.delete("/adapters/txt", headers={"Authorization": ""}),
     401, "admin token"),
    ("admin call with a wrong token", lambda c: lambda srv: srv.post(
        "/adapters", token="y" * 32, files={"file": ("a.zip", b"x")}), 401, "wrong bearer token"),
]


@pytest.mark.parametrize("build,status,word", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_gets_4xx_naming_the_problem(ctx, build, status, word):
    srv = ctx["srv"]
    r = build(ctx)(srv)
    assert r.status_code == status, r.text
    body = r.json()
    assert word in body["message"], body
    assert body["error"] and body["problems"]
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_method_not_allowed_lists_every_method_of_the_path(ctx):
    srv = ctx["srv"]
    r = srv.request("PUT", "/adapters")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST", r.headers
    r = srv.request("OPTIONS", "/adapters/txt")
    assert r.status_code == 405 and r.headers["allow"] == "GET, DELETE", r.headers


def test_full_queue_answers_429_with_retry_after(ctx):
    srv = ctx["srv"]
    body = {"task": "txt", "texts": ["good", "a great movie"]}
    barrier = threading.Barrier(6)

    def call(_):
        with srv.new_client() as client:
            barrier.wait(timeout=30)
            return client.post("/predict", json=body)

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(call, range(6)))
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) == {200, 429} and statuses.count(200) >= 1, statuses
    for r in answers:
        if r.status_code == 429:
            assert "capacity" in r.json()["message"] and int(r.headers["retry-after"]) >= 1


def test_tokens_that_work(ctx):
    srv = ctx["srv"]
    assert srv.post("/predict", json=TEXTS, token=INFERENCE).status_code == 200
    assert srv.post("/predict", json=TEXTS, token=srv.admin).status_code == 200
    assert srv.get("/adapters/txt", token=INFERENCE).status_code == 200
    assert srv.get("/backbones", token=srv.admin).status_code == 200
    # Probes and metrics stay open for orchestrators and scrapers.
    for path in ("/readyz", "/livez", "/healthz", "/metrics"):
        assert srv.get(path, headers={"Authorization": ""}).status_code == 200


def test_failed_registrations_left_the_tasks_untouched(ctx):
    srv = ctx["srv"]
    names = {a["name"] for a in srv.get("/adapters").json()["adapters"]}
    assert names == {"txt", "img"}
    assert srv.post("/predict", json=TEXTS).status_code == 200


def test_no_internal_errors_were_logged(ctx):
    """Runs last in this module: none of the bad inputs above produced a 500 or a traceback."""
    srv = ctx["srv"]
    assert 'status="500"' not in srv.get("/metrics").text
    assert srv.internal_errors() == []
