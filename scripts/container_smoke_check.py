"""Two running replicas on one store agree: the checks of scripts/container_smoke.sh.

    python scripts/container_smoke_check.py --token ADMIN http://127.0.0.1:PA http://127.0.0.1:PB

1. an adapter registered on replica A is served by replica B (B loads it from the store);
2. a second version registered on A reaches B;
3. a rollback on B to the first version is served by A.

The two versions are linear heads on the text backbone whose biases pick opposite labels
whatever the text, so which version answered is read off the predicted label (and the
``version`` field). Exits non-zero, naming the step, on any disagreement.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a source checkout

from adapters.format import BackboneRef, HeadSpec, Manifest, write_head_adapter  # noqa: E402
from adapters.format.archive import make_archive  # noqa: E402
from adapters.heads import Head  # noqa: E402

TASK = "smoke-sentiment"
LABELS = ["neg", "pos"]


def head_adapter(folder: Path, backbone: dict, favour: int) -> bytes:
    """A zip of a linear head whose bias makes label ``favour`` win on any input."""
    spec = HeadSpec(pooling="mean", input_dim=backbone["hidden_size"])
    head = Head(spec, len(LABELS))
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        head.linear_layers()[-1].bias[favour] = 5.0
    manifest = Manifest(name=TASK, kind="head", labels=LABELS,
                        backbone=BackboneRef(name=backbone["name"], fingerprint=backbone["fingerprint"]),
                        head=spec, preprocessing=backbone["preprocessing"])
    write_head_adapter(folder, manifest, head.state_for_file())
    return make_archive(folder)


def served(client: httpx.Client, url: str) -> tuple[str, str]:
    r = client.post(f"{url}/predict", json={"task": TASK, "texts": ["a container smoke test"]})
    r.raise_for_status()
    result = r.json()["results"][0]
    return result["version"], result["predictions"][0]["label"]


def wait_for(client: httpx.Client, url: str, version: str, label: str, what: str, timeout_s: float = 30) -> float:
    start = time.monotonic()
    got = None
    while time.monotonic() - start < timeout_s:
        try:
            got = served(client, url)
        except httpx.HTTPStatusError as exc:
            got = (exc.response.status_code, exc.response.text[:200])
        if got == (version, label):
            return time.monotonic() - start
        time.sleep(0.2)
    raise SystemExit(f"FAILED: {what}: {url} serves {got}, expected ({version[:12]}, {label!r})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--token", required=True, help="the admin token both replicas share")
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args()
    admin = {"Authorization": f"Bearer {args.token}"}
    with httpx.Client(timeout=60) as client, tempfile.TemporaryDirectory() as tmp:
        backbone = next(b for b in client.get(f"{args.a}/backbones").raise_for_status().json()["backbones"]
                        if b["modality"] == "text")
        versions = []
        for i, favour in enumerate((0, 1)):
            archive = head_adapter(Path(tmp) / f"v{i}", backbone, favour)
            r = client.post(f"{args.a}/adapters", headers=admin, files={"file": ("a.zip", archive)})
            if r.status_code != 201:
                raise SystemExit(f"FAILED: register v{i + 1} on A: {r.status_code} {r.text[:300]}")
            versions.append(r.json()["version"])
            seconds = wait_for(client, args.b, versions[-1], LABELS[favour], f"v{i + 1} registered on A, on B")
            print(f"v{i + 1} {versions[-1][:12]} registered on A, served by B after {seconds:.2f} s")

        r = client.post(f"{args.b}/adapters/{TASK}/activate", headers=admin, json={"version": versions[0]})
        if r.status_code != 200:
            raise SystemExit(f"FAILED: roll back on B: {r.status_code} {r.text[:300]}")
        seconds = wait_for(client, args.a, versions[0], LABELS[0], "rollback on B, on A")
        print(f"rolled back to v1 on B, served by A after {seconds:.2f} s")
        for name, url in (("A", args.a), ("B", args.b)):
            listing = client.get(f"{url}/adapters").raise_for_status().json()
            active = {a["name"]: a["active_version"] for a in listing["adapters"]}
            if active.get(TASK) != versions[0]:
                raise SystemExit(f"FAILED: GET /adapters on {name} says {active}, expected v1")
            print(f"{name}: replica {listing['replica_id']}, generation {listing['generation']}, "
                  f"{TASK} active {versions[0][:12]}")


if __name__ == "__main__":
    main()
