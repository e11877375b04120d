"""Local Llama Guard backend on a GPU: Llama-Guard-3-1B- and 8B-shaped models with random bf16 weights.

Measures, for 512-token conversations: plain transformers (eager, SDPA, full logits) at batch 1, the fast
first-token scorer at batch 1 (p50), classifications/s through the micro-batcher at several batch sizes,
and ``generate`` of 10 tokens. Run: ``python -m tests.bench.bench_safety_gpu [--quick] [--sizes 1b,8b]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    "1b": dict(
        hidden_size=2048,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=8192,
        tie_word_embeddings=True,
        rope_factor=32.0,
    ),
    "8b": dict(
        hidden_size=4096,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        intermediate_size=14336,
        tie_word_embeddings=False,
        rope_factor=8.0,
    ),
}
SEQ = 512


def build(size: str) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    s = dict(SHAPES[size])
    factor = s.pop("rope_factor")
    cfg = LlamaConfig(
        vocab_size=128256,
        max_position_embeddings=131072,
        rms_norm_eps=1e-5,
        rope_theta=500000.0,
        attn_implementation="sdpa",
        rope_scaling={
            "rope_type": "llama3",
            "factor": factor,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        **s,
    )
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg)
    torch.set_default_dtype(torch.float32)
    return model.eval()


def p50_ms(fn: Callable[[], Any], n: int) -> float:
    import torch

    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def batched_rate(fast: Any, seqs: list[list[int]], batch: int, tok: list[int], wait_ms: float) -> float:
    """Classifications/s with ``len(seqs)`` concurrent callers through the micro-batcher."""
    from guard.screens.safety.batch import MicroBatcher

    batcher = MicroBatcher(lambda items: list(fast.logprobs(items, tok)), max_batch=batch, max_wait_ms=wait_ms)

    async def go() -> float:
        await asyncio.gather(*(batcher.submit(s) for s in seqs[: batch * 2]))  # warm: capture graphs
        t0 = time.perf_counter()
        await asyncio.gather(*(batcher.submit(s) for s in seqs))
        return len(seqs) / (time.perf_counter() - t0)

    try:
        return asyncio.run(go())
    finally:
        batcher.close()


def bench_size(size: str, quick: bool, variants: tuple[str, ...]) -> dict[str, Any]:
    import torch

    torch.manual_seed(0)
    model = build(size)
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(1000, 120000, (1, SEQ), generator=gen)
    dev = ids.cuda()
    out: dict[str, Any] = {"size": size, "seq": SEQ}
    n = 10 if quick else 50
    with torch.inference_mode():
        out["hf_eager_full_logits_b1_p50_ms"] = p50_ms(lambda: model(dev, use_cache=False), n)
        out["hf_eager_rate_b16"] = 16 / (p50_ms(lambda: model(dev.expand(16, -1), use_cache=False), 5) / 1000)

        def gen_ids() -> Any:
            return model.generate(
                dev,
                max_new_tokens=10,
                min_new_tokens=10,
                do_sample=False,
                pad_token_id=0,
                attention_mask=torch.ones_like(dev),
            )

        out["hf_generate10_b1_p50_ms"] = p50_ms(gen_ids, 3 if quick else 10)
    tok = [100, 200]
    seq = ids[0].tolist()
    with torch.inference_mode():
        ref = model(dev, use_cache=False).logits[0, -1].float().log_softmax(-1)[tok].cpu()
    count = (256 if quick else 1024) * (2 if size == "1b" else 1)
    seqs = torch.randint(1000, 120000, (count, SEQ), generator=gen).tolist()
    for variant in variants:
        try:
            out[f"fast_{variant}"] = _variant(model, variant, ref, seq, seqs, tok, n, quick)
        except Exception as e:
            out[f"fast_{variant}"] = {"error": f"{type(e).__name__}: {e}"}
        print(size, variant, json.dumps(out[f"fast_{variant}"]), file=sys.stderr, flush=True)
    model = None  # the last reference: the cache below can then free its memory
    torch.cuda.empty_cache()
    return out


def _variant(
    model: Any, variant: str, ref: Any, seq: list[int], seqs: list[list[int]], tok: list[int], n: int, quick: bool
) -> dict[str, Any]:
    from guard.screens.safety.fast import FastLlama

    fast = FastLlama(model, cuda_graphs=True, compile_layers=variant != "graphs", fp8=variant == "fp8")
    t0 = time.perf_counter()
    fast.warmup([SEQ], 64, tok)
    r: dict[str, Any] = {"warmup_s": time.perf_counter() - t0}
    r["vs_hf_max_abs_logprob_diff"] = float((ref - fast.logprobs([seq], tok)[0]).abs().max())
    r["b1_p50_ms"] = p50_ms(lambda: fast.logprobs([seq], tok), n * 4)
    r["rate_by_max_batch"] = {
        str(b): batched_rate(fast, seqs, b, tok, wait_ms=1.0) for b in ((64,) if quick else (32, 64))
    }
    r["rate_best"] = max(r["rate_by_max_batch"].values())
    fast = None  # the last reference, freed before the next variant
    import gc

    import torch

    torch._dynamo.reset()  # compiled graphs hold the fused weights: free them before the next variant
    gc.collect()
    torch.cuda.empty_cache()
    return r


def run(quick: bool = False, sizes: tuple[str, ...] = ("1b", "8b"), variants: tuple[str, ...] = ("compile",)) -> dict:
    """variants: graphs (eager kernels, CUDA graphs), compile (torch.compile'd layers + graphs), fp8 (compile,
    FP8 matmuls with rowwise scales: a numerics trade, reported separately)."""
    import torch

    res: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "variants": list(variants),
        "results": [],
    }
    import transformers

    res["transformers"] = transformers.__version__
    for size in sizes:
        res["results"].append(bench_size(size, quick, variants))
        print(json.dumps(res["results"][-1]), file=sys.stderr, flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", default="1b,8b")
    ap.add_argument("--variants", default="compile", help="comma list of graphs, compile, fp8")
    a = ap.parse_args()
    res = run(a.quick, tuple(a.sizes.split(",")), tuple(a.variants.split(",")))
    text = json.dumps(res, indent=2)
    print(text)
    if os.environ.get("OUT"):
        with open(os.path.join(os.environ["OUT"], "bench_safety_gpu.json"), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
