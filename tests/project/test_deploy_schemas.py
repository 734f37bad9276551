"""The Kubernetes manifests in deploy/ are valid against the Kubernetes API schemas, offline.

``kubernetes-validate`` ships the OpenAPI-derived JSON schemas of every Kubernetes release
it supports, so nothing is fetched. Strict mode also rejects fields the API does not know
(a typo such as ``readinessprobe`` would otherwise be silently ignored by kubectl's
client-side apply). The Kustomization has no API schema; tests/project/test_deploy.py checks it.
"""

import copy
from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")  # in the dev extras

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# The oldest release still maintained upstream when these files were written, and the
# newest the schemas know.
VERSIONS = ["1.31.0", kubernetes_validate.latest_version()]


def resources() -> list[tuple[str, dict]]:
    out = []
    for path in sorted(DEPLOY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") != "Kustomization":
                out.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


def test_every_manifest_is_checked():
    kinds = {doc["kind"] for _, doc in resources()}
    assert {"Deployment", "Service", "ConfigMap", "HorizontalPodAutoscaler",
            "PodDisruptionBudget", "Secret"} <= kinds


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name,doc", resources(), ids=[n for n, _ in resources()])
def test_manifest_matches_the_kubernetes_schema(name, doc, version):
    kubernetes_validate.validate(doc, version, strict=True)  # raises ValidationError


def deployment() -> dict:
    return next(doc for _, doc in resources() if doc["kind"] == "Deployment")


@pytest.mark.parametrize("break_it", [
    lambda d: d["spec"].__setitem__("replicas", "two"),  # wrong type
    lambda d: d["spec"]["template"]["spec"]["containers"][0].__setitem__("readinessprobe", {}),  # typo
    lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),  # required field
], ids=["wrong-type", "unknown-field", "missing-required"])
def test_the_check_rejects_a_broken_deployment(break_it):
    doc = copy.deepcopy(deployment())
    break_it(doc)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)
