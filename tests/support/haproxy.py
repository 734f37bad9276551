"""Run deploy/haproxy/haproxy.cfg as a real ``haproxy`` process in front of local replicas.

    proxy = Proxy(root, {"r1": "127.0.0.1:3001", "r2": "127.0.0.1:3002"}).start()
    httpx.post(proxy.url + "/predict", headers={"X-Taskswap-Task": "sentiment"}, json=...)
    proxy.stop()

The config file is the deployed one; only the servers are filled in (its ``# @servers``
lines, :func:`render`). HAProxy is a Debian package that ``scripts/setup.sh`` installs
(step 1), so a machine set up by the project has it.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

from support.server import REPO, free_port

CONFIG = REPO / "deploy" / "haproxy" / "haproxy.cfg"
MARKER = "    # @servers"


def render(server_lines: list[str], template: str | None = None) -> str:
    """The deployed config with every ``# @servers`` line replaced by ``server_lines``.

    >>> "server r1 127.0.0.1:1" in render(["server r1 127.0.0.1:1"])
    True
    """
    text = CONFIG.read_text() if template is None else template
    assert text.count(MARKER + "\n") >= 2, f"{CONFIG}: the '# @servers' lines are missing"
    return text.replace(MARKER + "\n", "".join(f"    {line}\n" for line in server_lines))


def round_robin_template() -> str:
    """The deployed config with inference balanced round-robin (a baseline to compare with)."""
    text = CONFIG.read_text()
    for line in ("    balance hdr(X-Taskswap-Task)\n", "    hash-type consistent\n", "    hash-balance-factor 150\n"):
        assert line in text, line
        text = text.replace(line, "    balance roundrobin\n" if "balance hdr" in line else "")
    return text


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)
    if found is None:
        raise RuntimeError("haproxy is not installed: run `make setup` (scripts/setup.sh step 1 installs it)")
    return found


class Proxy:
    """One haproxy process listening on 127.0.0.1:``port`` with ``servers`` (name -> host:port)."""

    def __init__(self, root: Path, servers: dict[str, str], port: int | None = None,
                 template: str | None = None):
        self.root = Path(root)
        self.template = template  # None: deploy/haproxy/haproxy.cfg
        self.servers = dict(servers)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = self.root / f"haproxy-{self.port}.cfg"
        self.log_path = self.root / f"haproxy-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, ready_timeout_s: float = 30) -> "Proxy":
        """Write the config, start haproxy, wait until every server passes its health check."""
        self.config_path.write_text(render([f"server {n} {a}" for n, a in self.servers.items()], self.template))
        env = {**os.environ, "TASKSWAP_PROXY_BIND": f"127.0.0.1:{self.port}"}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([haproxy_binary(), "-db", "-f", str(self.config_path)], env=env,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"haproxy exited ({self.proc.returncode}): {self.log_path.read_text()[-3000:]}")
            if self._all_servers_seen():
                return self
            time.sleep(0.2)
        raise RuntimeError(f"haproxy: not every server answered through it in {ready_timeout_s}s")

    def _all_servers_seen(self) -> bool:
        """Round-robin admin traffic reaches each replica once its health check passed."""
        seen = set()
        try:
            for _ in range(3 * len(self.servers)):
                seen.add(httpx.get(self.url + "/backbones", timeout=5).headers.get("x-taskswap-replica"))
        except httpx.TransportError:
            return False
        return len(seen - {None}) == len(self.servers)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(os.getpgid(self.proc.pid), signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(os.getpgid(self.proc.pid), signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


# The server lines of the Kubernetes ConfigMap (deploy/proxy.yaml): up to 64 replicas found
# by DNS on the headless Service, each slot filled as pods come and go.
K8S_SERVERS = ['server-template replica 1-64 "${TASKSWAP_REPLICAS_DNS}:3000" resolvers cluster '
               'init-addr none resolve-prefer ipv4']
