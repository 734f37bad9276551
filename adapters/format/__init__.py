"""The on-disk adapter format: manifest, safetensors checks, safe archives, directories."""

from adapters.format.adapter_dir import AdapterDir, content_hash, read_adapter_dir, write_head_adapter
from adapters.format.manifest import BackboneRef, HeadSpec, Manifest

__all__ = ["AdapterDir", "BackboneRef", "HeadSpec", "Manifest", "content_hash",
           "read_adapter_dir", "write_head_adapter"]
