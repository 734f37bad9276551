"""No leak per registration, measured precisely in-process (no HTTP noise).

Register (head / LoRA alternately) -> predict -> delete, many times, through the same
``Registry`` + ``Runtime`` the server uses. After a warm-up, Python allocations
(tracemalloc), live objects (gc) and RSS must stay flat: a leak of one adapter per
cycle would show as ~the adapter's size x cycles. ``bench/memory_churn.py`` runs the
long version over HTTP on the real backbones.
"""

from __future__ import annotations

import gc
import tracemalloc

from adapters.registry import Registry
from adapters.runtime import Runtime
from adapters.store import open_store
from support.factories import head_adapter, peft_lora_dir
from support.proc_mem import rss_bytes

KiB, MiB = 1 << 10, 1 << 20


def test_register_delete_cycles_do_not_leak(tmp_path, text_backbone, tiny_dir, one_torch_thread):
    import os
    registry = Registry(open_store(str(tmp_path / "store")), {"text": text_backbone})
    runtime = Runtime(registry)
    loras = [peft_lora_dir(tmp_path / f"lora{i}", str(tiny_dir / "text"), seed=i) for i in range(2)]
    heads = [head_adapter(tmp_path / f"head{i}", text_backbone, "x", seed=i, hidden=(16,)) for i in range(2)]

    def cycle(i: int) -> None:
        name = f"churn{i % 4}"
        if i % 2:
            registry.register(heads[(i // 2) % 2], name=name)
        else:
            registry.register(loras[(i // 2) % 2], name=name)
        (res,) = runtime.run([runtime.prepare([name], ["good movie", "bad plot"], "text")])[0]
        assert len(res.rows) == 2
        registry.delete(name)

    for i in range(20):
        cycle(i)
    gc.collect()
    tracemalloc.start()
    base_py, _ = tracemalloc.get_traced_memory()
    base_objects = len(gc.get_objects())
    base_rss = rss_bytes(os.getpid())
    n = 100
    for i in range(20, 20 + n):
        cycle(i)
    gc.collect()
    grown_py = tracemalloc.get_traced_memory()[0] - base_py
    top = tracemalloc.take_snapshot().statistics("lineno")[:5]
    tracemalloc.stop()
    grown_objects = len(gc.get_objects()) - base_objects
    grown_rss = rss_bytes(os.getpid()) - base_rss
    print(f"\n{n} cycles: python heap {grown_py / KiB:+.0f} KiB, objects {grown_objects:+d}, "
          f"RSS {grown_rss / MiB:+.1f} MiB")
    # one leaked LoRA or head per cycle would be >= 100 x several KiB and >= 100 x dozens of objects
    print("\n".join(map(str, top)))
    assert grown_py < 512 * KiB, "\n".join(map(str, top))
    assert grown_objects < 1000
    assert grown_rss < 64 * MiB
    assert registry.list() == [] and registry.resident_loras() == 0
