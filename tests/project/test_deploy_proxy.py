"""The task-affinity proxy's files agree with each other and with the code, offline: the
HAProxy config (deploy/haproxy/haproxy.cfg) passes ``haproxy -c`` as run locally and as
shipped in the Kubernetes ConfigMap (deploy/proxy.yaml, the same file with a server-template),
routes inference by task and admin round-robin, retries only inference on another replica;
the proxy manifests point at the replicas; the HPA's custom metrics are gauges the service
exports and prometheus-adapter's rules name. (Schemas: tests/project/test_deploy_schemas.py.)"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from support.haproxy import CONFIG, K8S_SERVERS, haproxy_binary, render

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def docs(name: str) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all((DEPLOY / name).read_text())}


def sections(cfg: str) -> dict[str, list[str]]:
    """'backend inference' -> its directives (comments and blank lines dropped)."""
    out, current = {}, None
    for line in cfg.splitlines():
        text = line.split("#", 1)[0].rstrip() if not line.lstrip().startswith("http-request") else line.rstrip()
        if not text.strip():
            continue
        if not line[0].isspace():
            current = out.setdefault(text.strip(), [])
        else:
            current.append(" ".join(text.split()))
    return out


def shipped_config() -> str:
    return docs("proxy.yaml")["ConfigMap", "taskswap-proxy"]["data"]["haproxy.cfg"]


def haproxy_check(cfg: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "haproxy.cfg"
    path.write_text(cfg)
    env = {**os.environ, "TASKSWAP_PROXY_BIND": "127.0.0.1:18080",
           "TASKSWAP_REPLICAS_DNS": "taskswap-replicas.default.svc.cluster.local"}
    return subprocess.run([haproxy_binary(), "-c", "-f", str(path)], env=env, capture_output=True,
                          text=True, timeout=60)


def test_the_configmap_is_the_deployed_config_with_kubernetes_servers():
    assert shipped_config() == render(K8S_SERVERS)


@pytest.mark.parametrize("where", ["loopback", "kubernetes"])
def test_haproxy_accepts_the_config(where, tmp_path):
    cfg = render(["server r1 127.0.0.1:3001", "server r2 127.0.0.1:3002"]) if where == "loopback" \
        else shipped_config()
    done = haproxy_check(cfg, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ALERT" not in done.stderr and "WARNING" not in done.stderr, done.stderr


def test_the_check_rejects_a_broken_config(tmp_path):
    broken = render(["server r1 127.0.0.1:3001"]).replace("hash-type consistent", "hash-type sideways")
    assert haproxy_check(broken, tmp_path).returncode != 0


def test_inference_is_hashed_on_the_task_and_retried_admin_is_round_robin():
    s = sections(CONFIG.read_text())
    inference, admin, front = s["backend inference"], s["backend admin"], s["frontend taskswap"]
    assert "balance hdr(X-Taskswap-Task)" in inference and "hash-type consistent" in inference
    [factor] = [int(d.split()[1]) for d in inference if d.startswith("hash-balance-factor")]
    assert 125 <= factor <= 200  # HAProxy's reasonable range: bounded load, not round-robin
    for backend in (inference, admin):
        assert "option httpchk GET /readyz" in backend and "option redispatch 1" in backend
    [retry] = [d for d in inference if d.startswith("retry-on")]
    assert {"conn-failure", "empty-response", "503"} <= set(retry.split()[1:])
    assert [d for d in admin if d.startswith("retry-on")] == ["retry-on conn-failure"]  # never replayed
    assert "option http-buffer-request" in inference  # the whole request is there to replay
    assert "balance roundrobin" in admin
    # The KServe v2 path fills the routing key when the client sent none.
    assert any("set-header X-Taskswap-Task %[path,field(4,/)]" in d for d in front)
    assert "use_backend inference if inference" in front and "default_backend admin" in front


def test_every_inference_route_is_sent_to_the_hashed_backend():
    front = sections(CONFIG.read_text())["frontend taskswap"]
    exact = {p for d in front if d.startswith("acl inference path ") for p in d.split()[3:]}
    [pattern] = [d.split()[3] for d in front if d.startswith("acl inference path_reg")]
    assert {"/predict", "/predict/upload", "/embed", "/v1/embeddings", "/v1/completions",
            "/v1/chat/completions", "/generate", "/generate_stream"} <= exact
    for path in ("/v2/models/sent/infer", "/v2/models/sent/versions/abc123/infer"):
        assert re.match(pattern, path), path
    for path in ("/v2/models/sent", "/adapters/sent", "/v2/models/sent/ready"):
        assert path not in exact and not re.match(pattern, path), path


def test_the_proxy_manifests_point_at_the_replicas():
    replica_pod = docs("deployment.yaml")["Deployment", "taskswap"]["spec"]["template"]
    d = docs("proxy.yaml")
    proxy = d["Deployment", "taskswap-proxy"]["spec"]
    headless = d["Service", "taskswap-replicas"]["spec"]
    assert headless["clusterIP"] == "None"
    assert headless["selector"].items() <= replica_pod["metadata"]["labels"].items()
    assert headless["ports"][0]["port"] == replica_pod["spec"]["containers"][0]["ports"][0]["containerPort"]
    assert f'{headless["ports"][0]["port"]}"' in K8S_SERVERS[0]
    env = {e["name"]: e.get("value") for e in proxy["template"]["spec"]["containers"][0]["env"]}
    assert env["TASKSWAP_REPLICAS_DNS"].startswith("taskswap-replicas.")
    [volume] = proxy["template"]["spec"]["volumes"]
    assert volume["configMap"]["name"] == "taskswap-proxy"
    assert d["Service", "taskswap-proxy"]["spec"]["selector"].items() \
        <= proxy["template"]["metadata"]["labels"].items()
    bind_port = int(env["TASKSWAP_PROXY_BIND"].rsplit(":", 1)[1])
    assert proxy["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] == bind_port
    assert "proxy.yaml" in yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"]


def test_the_hpa_scales_on_gauges_the_service_exports_through_the_adapter_rules():
    hpa = docs("hpa.yaml")["HorizontalPodAutoscaler", "taskswap"]["spec"]
    wanted = {m["pods"]["metric"]["name"] for m in hpa["metrics"] if m["type"] == "Pods"}
    assert wanted == {"taskswap_queue_rows", "taskswap_residency_pressure"}
    rules = yaml.safe_load(docs("prometheus-adapter-rules.yaml")["ConfigMap", "taskswap-prometheus-adapter-rules"]
                           ["data"]["config.yaml"])["rules"]
    assert {r["name"]["as"] for r in rules} == wanted
    metrics_source = (REPO / "service" / "metrics.py").read_text()
    for name in wanted:
        assert re.search(rf'm\.Gauge\(name="{name}"', metrics_source), name
