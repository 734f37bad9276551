"""The generation runtime: a decode engine with continuous batching on a frozen causal LM.

A sibling of the encoders' runtime (:mod:`adapters.runtime`), not a branch of it: its own
thread per language-model backbone (:class:`adapters.generation.engine.DecodeEngine`),
its requests, events and handles (:mod:`adapters.generation.events`),
per-sequence KV caches within a byte budget (:mod:`adapters.generation.kv`), per-row LoRA
through the same hooks the encoders use (:mod:`adapters.lora.batch`), sampling
(:mod:`adapters.generation.sampling`) and stop sequences (:mod:`adapters.generation.text`).
"""
