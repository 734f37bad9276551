"""Start and stop a real ``bentoml serve`` subprocess for HTTP tests.

Usage in a test module::

    from support.server import ServerFactory, tiny_backbones_env

    @pytest.fixture(scope="module")
    def servers(tmp_path_factory, tiny_dir):
        with ServerFactory(tmp_path_factory.mktemp("srv")) as f:
            yield f

    def test_x(servers, tiny_dir, tmp_path):
        srv = servers.start(store=tmp_path / "store", backbones=tiny_backbones_env(tiny_dir))
        r = srv.get("/adapters")
        srv.restart()            # same port, store and settings
        other = servers.start(store=srv.store, backbones=...)   # a second replica on one store

``Server.admin`` holds the admin token (``srv.post(..., admin=True)`` sends it).
Each server logs to ``<root>/server-<port>.log``; a server that does not become ready
within ``ready_timeout_s`` is killed and the test fails with the log's tail.
The ``server`` pytest fixture below gives one server per test module on tiny backbones.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_backbones_env(tiny_dir: Path) -> list[dict]:
    """``TASKSWAP_BACKBONES`` for the tiny text and vision backbones in ``tiny_dir``.

    Uses the folders conftest's ``text_backbone`` / ``vision_backbone`` fixtures write
    (``tiny_dir/text``, ``tiny_dir/vision``), so adapters built in-process on those
    fixtures have the fingerprints the server checks.
    """
    from adapters.backbones.tiny import tiny_backbone_spec
    specs = [tiny_backbone_spec("text", tiny_dir / "text"), tiny_backbone_spec("vision", tiny_dir / "vision")]
    return [{"name": s.name, "source": s.source, "max_length": s.max_length, "image_size": s.image_size}
            for s in specs]


class Server:
    """One running server subprocess. ``url``, ``store``, ``admin`` (token), ``log_path``."""

    def __init__(self, root: Path, store: Path | str, backbones: list[dict] | None,
                 admin_token: str | None, env: dict[str, str] | None, port: int | None,
                 ready_timeout_s: float):
        self.root = Path(root)
        self.store = store
        self.backbones = backbones
        self.admin = admin_token
        self.extra_env = dict(env or {})
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_timeout_s = ready_timeout_s
        self.log_path = self.root / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.client = httpx.Client(base_url=self.url, timeout=60)

    # ---- process -----------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSWAP_")}
        env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TASKSWAP_STORE=str(self.store),
                   TASKSWAP_SYNC_INTERVAL_S="0.2", TASKSWAP_TORCH_THREADS="1",
                   TASKSWAP_HOME=os.environ.get("TASKSWAP_HOME", str(Path.home() / ".cache" / "taskswap")),
                   BENTOML_HOME=str(self.root / "bentoml-home"), PYTHONUNBUFFERED="1")
        if self.backbones is not None:
            env["TASKSWAP_BACKBONES"] = json.dumps(self.backbones)
        if self.admin is not None:
            env["TASKSWAP_ADMIN_TOKEN"] = self.admin
        env.update(self.extra_env)
        return env

    def start(self, wait: bool = True) -> "Server":
        """Spawn ``bentoml serve`` and (unless ``wait=False``) wait for ``/readyz`` (bounded)."""
        cmd = [sys.executable, "-m", "bentoml", "serve", "service.service:Taskswap",
               "--host", "127.0.0.1", "--port", str(self.port)]
        log = open(self.log_path, "ab")
        # A new process group, so stop() ends the server and every worker it spawned.
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=self.env(), stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"server exited with code {self.proc.returncode} before it was ready")
            try:
                if self.client.get("/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self._fail(f"server not ready after {self.ready_timeout_s}s")

    def _fail(self, why: str) -> None:
        tail = self.log_tail()
        self.stop()
        pytest.fail(f"{why}; log {self.log_path}:\n{tail}", pytrace=False)

    def log_tail(self, chars: int = 6000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    def internal_errors(self) -> list[str]:
        """Log lines showing a 500 or a traceback (tests assert there are none)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return [line for line in text.splitlines()
                if "Traceback" in line or "status=500" in line or "unexpected error" in line]

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``timeout_s``."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return
        pgid = os.getpgid(self.proc.pid)
        os.killpg(pgid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(pgid, signal.SIGKILL)  # workers that outlived the arbiter, if any
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self) -> "Server":
        """Stop, then start again on the same port, store and settings."""
        self.stop()
        return self.start()

    # ---- HTTP --------------------------------------------------------------------------
    @property
    def inference(self) -> str | None:
        """The inference token this server was started with, if any."""
        return self.extra_env.get("TASKSWAP_INFERENCE_TOKEN")

    def headers(self, admin: bool = False, token: str | None = None) -> dict[str, str]:
        """Authorization for a call: ``token`` if given, else the admin token when ``admin``,
        else the inference token when one is configured."""
        token = token or (self.admin if admin else self.inference)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def new_client(self, admin: bool = False) -> httpx.Client:
        """A separate client (e.g. one per thread), sending the inference (or admin) token."""
        return httpx.Client(base_url=self.url, timeout=60, headers=self.headers(admin))

    def request(self, method: str, path: str, admin: bool = False, token: str | None = None,
                **kw) -> httpx.Response:
        headers = {**self.headers(admin, token), **kw.pop("headers", {})}
        return self.client.request(method, path, headers=headers, **kw)

    def get(self, path: str, admin: bool = False, **kw) -> httpx.Response:
        return self.request("GET", path, admin, **kw)

    def post(self, path: str, admin: bool = False, **kw) -> httpx.Response:
        return self.request("POST", path, admin, **kw)

    def delete(self, path: str, admin: bool = False, **kw) -> httpx.Response:
        return self.request("DELETE", path, admin, **kw)

    def register_archive(self, archive: bytes, filename: str = "adapter.zip", **fields) -> httpx.Response:
        """POST /adapters with a multipart archive (admin); ``fields``: name, labels, backbone."""
        data = {k: (json.dumps(v) if isinstance(v, list) else v) for k, v in fields.items() if v is not None}
        return self.post("/adapters", admin=True, files={"file": (filename, archive)}, data=data)

    def predict(self, tasks: str | list[str], texts=None, images=None, **kw) -> httpx.Response:
        """POST /predict for one task (a str) or several (a list) on texts or base64 images."""
        body = {"task": tasks} if isinstance(tasks, str) else {"tasks": tasks}
        body.update({"texts": texts} if texts is not None else {"images": images})
        return self.post("/predict", json=body, **kw)


class ServerFactory:
    """Starts servers under ``root`` and stops every one of them on exit."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.servers: list[Server] = []

    def start(self, store: Path | str, backbones: list[dict] | None = None,
              admin_token: str | None = "auto", env: dict[str, str] | None = None,
              port: int | None = None, ready_timeout_s: float = 180, wait: bool = True) -> Server:
        """A ready server (or just started, with ``wait=False``). ``admin_token="auto"`` makes
        a random one; ``None`` configures none."""
        token = secrets.token_hex(16) if admin_token == "auto" else admin_token
        srv = Server(self.root, store, backbones, token, env, port, ready_timeout_s)
        self.servers.append(srv)
        return srv.start(wait=wait)

    def close(self) -> None:
        for srv in self.servers:
            srv.stop()
            srv.client.close()

    def __enter__(self) -> "ServerFactory":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory):
    """A :class:`ServerFactory` whose servers are stopped at the end of the module."""
    with ServerFactory(tmp_path_factory.mktemp("servers")) as factory:
        yield factory


@pytest.fixture(scope="module")
def server(server_factory, tiny_dir, tmp_path_factory):
    """One ready server per module on the tiny backbones and a fresh store."""
    store = tmp_path_factory.mktemp("store")
    return server_factory.start(store=store, backbones=tiny_backbones_env(tiny_dir))
