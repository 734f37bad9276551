"""The adapter store: the durable truth, shared by every replica and worker."""

from adapters.store.base import Alias, AdapterStore, VersionInfo
from adapters.store.local import LocalStore


def open_store(url: str) -> AdapterStore:
    """A local folder path, ``file://`` URL, or any fsspec URL (``s3://bucket/prefix``).

    >>> import tempfile; open_store(tempfile.mkdtemp()).generation()
    0
    """
    if "://" in url and not url.startswith("file://"):
        from adapters.store.remote import FsspecStore  # fsspec only for a remote store: a local one imports none
        return FsspecStore(url)
    return LocalStore(url.removeprefix("file://"))


__all__ = ["Alias", "AdapterStore", "LocalStore", "VersionInfo", "open_store"]
