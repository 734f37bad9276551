"""The store contract's harness: every test that takes ``store`` / ``make_store`` runs on the
local folder store AND on the S3 store (a real moto server on loopback). Used by
``test_store_contract.py`` and by the tests of documents kept in both stores."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path

import pytest

from adapters.store import VersionInfo, open_store
from support.factories import head_adapter
from support.s3 import moto_s3  # noqa: F401  (session fixture)


@pytest.fixture(params=["local", "s3"])
def kind(request):
    return request.param


@pytest.fixture
def make_store(kind, tmp_path, monkeypatch, request):
    """``make_store()`` opens the test's store; calling it again opens a second handle on
    the same root (what another replica would see)."""
    monkeypatch.setenv("TASKSWAP_STORE_CACHE", str(tmp_path / "cache"))
    url = str(tmp_path / "store") if kind == "local" else request.getfixturevalue("moto_s3").new_store_url()
    return lambda: open_store(url)


@pytest.fixture
def store(make_store):
    return make_store()


@pytest.fixture
def adapter(tmp_path, text_backbone):
    """``adapter(seed)``: a real head adapter folder; different seeds, different bytes."""
    built: dict[tuple[int, str], Path] = {}

    def build(seed: int = 0, name: str = "sentiment") -> Path:
        if (seed, name) not in built:  # built once: the manifest carries a timestamp
            built[seed, name] = head_adapter(tmp_path / f"src-{name}-{seed}", text_backbone, name, seed=seed)
        return built[seed, name]
    return build


def info(version: str) -> VersionInfo:
    return VersionInfo(version=version, kind="head", labels=["neg", "pos"],
                       created_at=datetime.now(timezone.utc).isoformat())


def register(store, folder: Path, name: str = "sentiment") -> str:
    version = store.put_version(name, folder)
    store.publish(name, version, info(version))
    return version


def put_import(store, kind: str, folder: Path, rel: str, moto=None) -> None:
    """Place an adapter folder under the store's import area, as an operator would."""
    if kind == "local":
        shutil.copytree(folder, store.root / rel)
        return
    client = moto.client()
    for p in folder.iterdir():
        client.put_object(Bucket=store.bucket, Key=f"{store.prefix}/{rel}/{p.name}", Body=p.read_bytes())
