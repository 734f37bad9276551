"""Taskswap core: backbones, adapter format, store, registry and runtime. No HTTP here."""
