"""What generation costs (issue #26, item 6): decode tokens/s of the decode engine at 1, 8 and
32 concurrent streams for

- ``base``: the language model alone (prompt-only task: no LoRA rows);
- ``mixed8``: 8 different LoRA tasks, the streams spread over them, decoded together;
- ``hf_one``: Hugging Face ``generate`` on a ``PeftModel`` holding the same 8 adapters, one
  adapter at a time (``set_adapter``, one left-padded batch of that adapter's streams);
- ``hf_mixed``: the same ``generate`` once over every stream with PEFT's ``adapter_names``;

and the time to first token (submit to first token) of the engine's variants. The variants run
interleaved in one process, round after round (median of the rounds), so each ratio compares
runs made side by side. Greedy decoding, ``--new-tokens`` at most per stream; a stream's
tokens count up to and with its end-of-sequence token, on both sides.

Not measured here (docs/generation.md says so): classification p99 while generations run, and
``llama-cpp-python``.

    python -m bench generation --threads 1              # SmolLM2-135M-Instruct (embedded)
    python -m bench generation --smoke                  # tiny random Llama: runs end to end
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from adapters.backbones.base import BackboneSpec
from adapters.backbones.causal_lm import load_lm_backbone
from adapters.backbones.tiny import tiny_lm_spec
from adapters.generation.engine import DecodeEngine, EngineLimits
from adapters.generation.events import Delta, Failed, Finished, GenerationRequest
from adapters.generation.sampling import SamplingParams
from adapters.registry import Registry
from adapters.store import open_store
from bench.common import SMOKE_HELP, results_dir

LM_SPEC = BackboneSpec("lm", "embedded:SmolLM2-135M-Instruct")
PROMPTS = ["Translate to French: good morning, how are you today?", "Summarise: the film was long but moving.",
           "Write a short poem about the sea.", "The capital of Italy is", "Explain why the sky is blue.",
           "List three fruits that are red.", "Rewrite politely: give me the report now.",
           "Once upon a time, in a small village,"]
ENGINE_VARIANTS = ("base", "mixed8")
VARIANTS = ENGINE_VARIANTS + ("hf_one", "hf_mixed")


def peft_lora_dirs(root: Path, base_path: str, n: int, r: int = 8) -> list[Path]:
    """``n`` PEFT ``CAUSAL_LM`` LoRAs (q/v, rank ``r``) with small random B factors."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    out = []
    for i in range(n):
        torch.manual_seed(i)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_path),
                               LoraConfig(task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=2 * r,
                                          target_modules=["q_proj", "v_proj"]))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.02)
        model.save_pretrained(root / f"lora{i}")
        out.append(root / f"lora{i}")
    return out


def engine_run(engine: DecodeEngine, reqs: list[GenerationRequest]) -> dict:
    """Submit every request at once; tokens generated, wall seconds, first-token seconds."""
    done = threading.Event()
    lock = threading.Lock()
    state = {"left": len(reqs), "tokens": 0, "first": [], "error": None}
    t0 = time.perf_counter()

    def sink_for():
        seen = {"first": False}

        def sink(ev):
            with lock:
                if isinstance(ev, Delta) and not seen["first"]:
                    seen["first"] = True
                    state["first"].append(time.perf_counter() - t0)
                if isinstance(ev, (Finished, Failed)):
                    if isinstance(ev, Finished):
                        state["tokens"] += ev.completion_tokens
                    else:
                        state["error"] = ev.error
                    state["left"] -= 1
                    if state["left"] == 0:
                        done.set()
        return sink

    for req in reqs:
        engine.submit(req, sink=sink_for())
    if not done.wait(3600):
        raise SystemExit("the decode engine did not finish within an hour")
    if state["error"] is not None:
        raise SystemExit(f"a generation failed: {state['error']}")
    return {"tokens": state["tokens"], "seconds": time.perf_counter() - t0, "ttft": state["first"]}


def _count(rows: torch.Tensor, eos: int) -> int:
    """Tokens of generated ``rows`` ([batch, new]) up to and with each row's first EOS."""
    total = 0
    for row in rows.tolist():
        total += row.index(eos) + 1 if eos in row else len(row)
    return total


def hf_run(model, tok, prompts: list[str], names: list[str], new_tokens: int, mixed: bool) -> dict:
    """HF ``generate`` with PEFT: one batch per adapter (``mixed``: one batch, ``adapter_names``)."""
    t0, tokens = time.perf_counter(), 0
    groups = [(None, list(range(len(prompts))))] if mixed else [
        (n, [i for i, m in enumerate(names) if m == n]) for n in dict.fromkeys(names)]
    with torch.inference_mode():
        for adapter, rows in groups:
            batch = tok([prompts[i] for i in rows], return_tensors="pt", padding=True)
            kw = {"adapter_names": [names[i] for i in rows]} if mixed else {}
            if not mixed:
                model.set_adapter(adapter)
            out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, **kw)
            tokens += _count(out[:, batch["input_ids"].shape[1]:], tok.eos_token_id)
    return {"tokens": tokens, "seconds": time.perf_counter() - t0, "ttft": []}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench generation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--streams", default="1,8,32", help="concurrent streams, comma-separated")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens generated per stream at most")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    ap.add_argument("--adapters", type=int, default=8, help="LoRA tasks in the mixed variants")
    args = ap.parse_args(argv)
    if args.smoke:
        args.streams, args.new_tokens, args.rounds = "1,4", 4, 1
    streams = [int(s) for s in args.streams.split(",")]
    torch.set_num_threads(args.threads)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bb = load_lm_backbone(tiny_lm_spec(root / "lm") if args.smoke else LM_SPEC)
        dirs = peft_lora_dirs(root, bb.source_path, args.adapters)
        registry = Registry(open_store(str(root / "store")), {"lm": bb})
        registry.sync()
        loras = [registry.register(d, name=f"task{i}") for i, d in enumerate(dirs)]
        tok = bb.tokenizer
        hf = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(bb.source_path), str(dirs[0]),
                                       adapter_name="task0")
        for i, d in enumerate(dirs[1:], 1):
            hf.load_adapter(str(d), adapter_name=f"task{i}")
        hf.eval()
        hf_tok = type(tok).from_pretrained(bb.source_path)
        hf_tok.padding_side = "left"
        if hf_tok.pad_token is None:
            hf_tok.pad_token = hf_tok.eos_token
        params = SamplingParams(max_new_tokens=args.new_tokens)
        runs: dict[tuple[str, int], list[dict]] = {}
        with DecodeEngine(bb, EngineLimits(max_running=max(streams))) as engine:
            for rnd in range(args.rounds):
                for n in streams:
                    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
                    names = [f"task{i % args.adapters}" for i in range(n)]
                    ids = [tok(p)["input_ids"] for p in prompts]
                    for variant in VARIANTS:
                        if variant == "base":
                            r = engine_run(engine, [GenerationRequest(x, params) for x in ids])
                        elif variant == "mixed8":
                            r = engine_run(engine, [GenerationRequest(x, params, loras[i % args.adapters].weights)
                                                    for i, x in enumerate(ids)])
                        else:
                            r = hf_run(hf, hf_tok, prompts, names, args.new_tokens, variant == "hf_mixed")
                        runs.setdefault((variant, n), []).append(r)
                        print(f"round {rnd} streams {n:>2} {variant:<8} {r['tokens'] / r['seconds']:8.1f} tokens/s",
                              flush=True)
    report = summarise(runs, streams, args, argv)
    name = "generation-smoke" if args.smoke else "generation"
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2))
    (out / f"{name}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


def summarise(runs, streams, args, argv) -> dict:
    rows = []
    for n in streams:
        tps = {v: statistics.median(r["tokens"] / r["seconds"] for r in runs[(v, n)]) for v in VARIANTS}
        ttft = {v: statistics.median(t for r in runs[(v, n)] for t in r["ttft"]) for v in ENGINE_VARIANTS}
        rows.append({"streams": n, "tokens_per_s": tps, "ttft_median_s": ttft,
                     "mixed8_vs_base": tps["mixed8"] / tps["base"],
                     "mixed8_vs_hf_one": tps["mixed8"] / tps["hf_one"],
                     "mixed8_vs_hf_mixed": tps["mixed8"] / tps["hf_mixed"]})
    return {"command": "python -m bench generation " + " ".join(sys.argv[2:] if argv is None else argv),
            "model": "tiny random Llama" if args.smoke else LM_SPEC.source, "threads": args.threads,
            "new_tokens": args.new_tokens, "rounds": args.rounds, "adapters": args.adapters,
            "load_average_at_end": list(os.getloadavg()), "cpus": os.cpu_count(), "rows": rows}


def markdown(rep: dict) -> str:
    lines = ["# Generation: decode tokens/s, base vs 8 mixed LoRA tasks vs HF+PEFT", "",
             f"`{rep['command']}` — {rep['model']}, {rep['threads']} torch thread(s), {rep['cpus']} CPUs, "
             f"load average at the end {rep['load_average_at_end'][0]:.1f}; {rep['new_tokens']} new tokens "
             f"per stream at most, median of {rep['rounds']} interleaved rounds", "",
             "| streams | base tok/s | 8 LoRA mixed tok/s | HF+PEFT one at a time | HF+PEFT adapter_names "
             "| mixed / base | mixed / HF one | mixed / HF mixed | TTFT base | TTFT mixed |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        t, f = r["tokens_per_s"], r["ttft_median_s"]
        lines.append(f"| {r['streams']} | {t['base']:.1f} | {t['mixed8']:.1f} | {t['hf_one']:.1f} | "
                     f"{t['hf_mixed']:.1f} | {r['mixed8_vs_base']:.2f}× | {r['mixed8_vs_hf_one']:.2f}× | "
                     f"{r['mixed8_vs_hf_mixed']:.2f}× | {f['base']:.3f} s | {f['mixed8']:.3f} s |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
