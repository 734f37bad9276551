"""Put many adapters into a store quickly, through the store's own API (no server).

The same calls a registration makes after its checks (``prepare_adapter``,
``store.put_version``, ``store.publish``), without the load and dry run: for tests and
benches that need tens or thousands of tasks in a shared store before servers start.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from adapters.format.adapter_dir import manifest_bytes
from adapters.loading import prepare_adapter
from adapters.store.base import VersionInfo


def publish(store, folder: Path, backbones: dict, name: str | None = None,
            labels: list[str] | None = None) -> str:
    """Check ``folder`` against ``backbones``, store it and make it the active version of its
    task (``name`` overrides the manifest's). Returns the version."""
    prep = prepare_adapter(folder, backbones, name=name, labels=labels, fresh=True)
    version = store.put_version(prep.manifest.name, folder, {"adapter.json": manifest_bytes(prep.manifest)})
    store.publish(prep.manifest.name, version,
                  VersionInfo(version=version, kind=prep.manifest.kind, labels=prep.manifest.labels,
                              created_at=datetime.now(timezone.utc).isoformat()))
    return version
