"""The on-disk adapter format, as a schema: manifest, safetensors headers, safe archives,
directory pieces. It names no adapter kind or task type; checking an adapter against them
is :mod:`adapters.plugin_checks` (``read_adapter_dir``, ``validate_manifest``)."""

from adapters.format.adapter_dir import AdapterDir, content_hash, write_head_adapter
from adapters.format.manifest import BackboneRef, DenseSpec, HeadSpec, Manifest

__all__ = ["AdapterDir", "BackboneRef", "DenseSpec", "HeadSpec", "Manifest", "content_hash", "write_head_adapter"]
