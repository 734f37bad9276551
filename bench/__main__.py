"""Every benchmark program behind one command: ``python -m bench <name> [its options]``.

    python -m bench --help            # the benches, one line each
    python -m bench http --help       # one bench's own options
    python -m bench runtime --quick

Each bench keeps its own argument parser in its module (``main(argv)``); this file only
names them and hands the rest of the command line over. A module is imported only when
its bench runs, so the listing is instant.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module under bench/, one-line description)
BENCHES: dict[str, tuple[str, str]] = {
    "runtime": ("runtime_bench", "in-process throughput of mixed-task batches vs the raw backbone, and baselines"),
    "http": ("http_bench", "served over HTTP vs a raw-backbone BentoML service; embeddings; hot swap"),
    "peers": ("peers", "next to the alternatives: N separate models, sentence-transformers, infinity-emb"),
    "scale": ("scale", "many head tasks in one replica: cold start, memory, listing, sync, registration"),
    "cold-start": ("cold_start", "a server's start, exec to /readyz, stage by stage (optionally against another tree)"),
    "scale-populate": ("scale_populate", "fill a store with many head tasks quickly (for scale)"),
    "rollout": ("rollout_bench", "what rollouts cost: shadow throughput, p99 while fitting, fit time"),
    "dense": ("dense_bench", "a detector alone, a classifier alone and both in one request at 224 px: images/s, ratios"),
    "dense-transfer": ("dense_transfer", "detection/segmentation: frozen head vs LoRA vs scratch at 3 data sizes, 3 seeds, one time cap"),
    "top-layers": ("top_layers_bench", "serving cost of top_layers (and LoRA) adapters in mixed traffic"),
    "multitask": ("multitask_bench", "N tasks asked about the same inputs: one shared LoRA vs N separate LoRAs"),
    "top-layers-compare": ("top_layers_compare", "head vs LoRA vs top_layers vs scratch vs plain PEFT: accuracy and time"),
    "peft-plain": ("peft_plain", "the plain PEFT LoRA script alone: accuracy of a trick-free reference"),
    "generation-transfer": ("generation_transfer", "zero-shot vs few-shot vs LoRA at N pairs on held-out catalogs (en->fr/de/es)"),
    "transfer-report": ("transfer_report", "head vs LoRA vs scratch per label budget (--task tokens: taggers)"),
    "domain": ("domain", "domain adaptation (CORAL, pseudo_label) on film -> drug reviews and Fashion-MNIST -> negatives: share of the gap to target-supervised closed"),
    "domain-probe": ("domain_probe", "why the drug-review figures look odd: linear probes swept over regularisation, source thresholds"),
    "init-from": ("init_from_bench", "few-label warm start (--init-from) vs from zero at 10 / 50 / 200 target labels"),
    "affinity": ("affinity", "task-affinity routing vs round-robin behind HAProxy, 3 replicas, LoRA tasks 2.5x a budget"),
    "proxy-stop": ("proxy_stop", "replicas stopped one by one behind HAProxy under load: failed or unanswered requests"),
    "convergence": ("convergence", "replica convergence over HTTP on a local and an S3 store"),
    "crash-loop": ("crash_loop", "kill -9 the server during registrations, again and again, and check"),
    "fuzz": ("fuzz", "the long schemathesis run against a real server's own OpenAPI schema"),
    "hostile-load": ("hostile_load", "honest clients and attackers on one real server, for minutes"),
    "fairness": ("fairness", "one client sending the costliest valid requests beside honest clients: p99, RSS, its own throughput"),
    "preempt": ("preempt", "what preemption between trunk blocks costs a namespace alone: rows/s on vs off, in process"),
    "tenancy": ("tenancy", "namespace A floods at 10x its share beside namespace B's steady load: B's p99, A's rows/s"),
    "load-faults": ("load_faults", "prediction load while adapters are registered, rolled back and deleted"),
    "memory-churn": ("memory_churn", "server memory under register -> predict -> delete cycles"),
    "profile": ("profile_predict", "where a served request's CPU goes, stage by stage (CPU-time sampling), under load"),
    "knobs": ("knobs", "the speed settings: torch threads x token budget, with and without competing processes"),
    "generation": ("generation_bench", "decode tokens/s at 1/8/32 streams: base vs 8 mixed LoRAs vs HF+PEFT; time to first token"),
    "gpu": ("gpu", "the runtime and HTTP benches on a CUDA device, fp32 and fp16"),
}


def usage() -> str:
    width = max(map(len, BENCHES))
    lines = ["usage: python -m bench <name> [options]   (python -m bench <name> --help: its options)",
             "", "benches:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in BENCHES.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the bench named by ``argv[0]`` with the rest of ``argv``; its exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in BENCHES:
        print(f"unknown bench {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.{BENCHES[name][0]}")
    # argparse names the program after argv[0], and results record the command they ran.
    sys.argv = [f"python -m bench {name}", *rest]
    result = module.main(rest)
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
