"""First-token scoring for Llama-architecture classifiers: one KV-less forward that returns the verdict
token's probabilities at the last prompt position only.

Why not ``model(ids).logits``: that computes logits for every position (512 x 128k vocab is about a quarter
of a 1B model's work at 512 tokens), builds a KV cache and launches hundreds of small kernels. Here:
fused QKV and gate/up weights, causal SDPA with right padding (pads come after each row's last token, so
causal attention never lets them change it, and no mask is needed), the last layer's MLP and the final norm
and head only for the one position per row, and on CUDA a captured graph per (batch, length) bucket.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

GQA_REPEAT = True  # expand K/V heads before SDPA: keeps the flash kernel (enable_gqa may fall back to math)
LEN_BUCKETS = (32, 64, 128, 256, 512, 768, 1024, 1536, 2048, 3072, 4096, 6144, 8192)


def _bucket(n: int, buckets: Sequence[int]) -> int:
    for b in buckets:
        if n <= b:
            return b
    return n


def _rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    dt = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return w * x32.to(dt)


def _rotate_half(x: Tensor) -> Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class FastLlama:
    """Wraps a transformers LlamaForCausalLM (weights shared, fused copies of QKV and gate/up)."""

    def __init__(self, model: Any, cuda_graphs: bool = True, compile_layers: bool = False, fp8: bool = False,
                 batch_buckets: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128)) -> None:
        cfg = model.config
        if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
            raise ValueError("biased Llama variants are not supported by the fast path")
        inner = model.model
        self.eps = cfg.rms_norm_eps
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.embed = inner.embed_tokens.weight
        self.norm = inner.norm.weight
        self.head = model.lm_head.weight
        self.fp8 = fp8
        self.layers = [self._fuse(layer, fp8) for layer in inner.layers]
        rot = inner.rotary_emb
        self.inv_freq = rot.inv_freq.float()
        self.rope_scale = float(getattr(rot, "attention_scaling", 1.0))
        self.device = self.embed.device
        self.graphs_on = cuda_graphs and self.device.type == "cuda"
        self.batch_buckets = tuple(batch_buckets)
        self._graphs: dict[tuple[int, int], tuple[Any, Tensor, Tensor, Tensor]] = {}
        self._pool: Any = None
        self._rope_cache: dict[int, tuple[Tensor, Tensor]] = {}
        self._layer: Callable[..., Tensor] = self._layer_eager
        if compile_layers:  # one compiled graph per (batch, length) bucket: allow enough of them
            for knob in ("cache_size_limit", "recompile_limit", "accumulated_cache_size_limit"):
                if hasattr(torch._dynamo.config, knob):
                    setattr(torch._dynamo.config, knob, max(256, getattr(torch._dynamo.config, knob)))
            self._layer = torch.compile(self._layer_eager, dynamic=False)

    @staticmethod
    def _fuse(layer: Any, fp8: bool) -> dict[str, Any]:
        a, m = layer.self_attn, layer.mlp
        w = {
            "ln1": layer.input_layernorm.weight, "ln2": layer.post_attention_layernorm.weight,
            "qkv": torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).contiguous(),
            "o": a.o_proj.weight,
            "gu": torch.cat([m.gate_proj.weight, m.up_proj.weight]).contiguous(),
            "down": m.down_proj.weight,
        }
        if fp8:  # e4m3 weights with one scale per output channel; activations scaled per row at run time
            for k in ("qkv", "o", "gu", "down"):
                scale = w[k].abs().amax(dim=1).float().clamp(min=1e-12) / 448.0
                w[k + "8"] = (w[k].float() / scale[:, None]).to(torch.float8_e4m3fn)
                w[k + "_s"] = scale[None, :].contiguous()
        return w

    def _lin(self, x: Tensor, w: dict[str, Any], k: str) -> Tensor:
        """x @ W.T in bf16, or in FP8 (rowwise-scaled _scaled_mm) when enabled and the row count allows."""
        rows = x.numel() // x.shape[-1]
        if not self.fp8 or rows % 16:
            return F.linear(x, w[k])
        x2 = x.reshape(rows, x.shape[-1])
        xs = x2.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / 448.0
        xq = (x2.float() / xs).to(torch.float8_e4m3fn)
        y = torch._scaled_mm(xq, w[k + "8"].t(), scale_a=xs, scale_b=w[k + "_s"], out_dtype=x.dtype)
        return y.view(*x.shape[:-1], y.shape[-1])

    def _rope(self, t: int) -> tuple[Tensor, Tensor]:
        if t not in self._rope_cache:
            pos = torch.arange(t, device=self.device, dtype=torch.float32)
            freqs = torch.outer(pos, self.inv_freq.to(self.device))
            emb = torch.cat((freqs, freqs), dim=-1)
            dt = self.embed.dtype
            self._rope_cache[t] = ((emb.cos() * self.rope_scale).to(dt), (emb.sin() * self.rope_scale).to(dt))
        return self._rope_cache[t]

    def _attn(self, x: Tensor, w: dict[str, Any], cos: Tensor, sin: Tensor) -> Tensor:
        b, t, _ = x.shape
        h, kv, d = self.heads, self.kv_heads, self.head_dim
        qkv = self._lin(_rms(x, w["ln1"], self.eps), w, "qkv").view(b, t, h + 2 * kv, d).transpose(1, 2)
        q, k, v = qkv.split([h, kv, kv], dim=1)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if kv != h and GQA_REPEAT:
            k, v = k.repeat_interleave(h // kv, dim=1), v.repeat_interleave(h // kv, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=kv != h and not GQA_REPEAT)
        return o.transpose(1, 2).reshape(b, t, h * d)

    def _mlp(self, x: Tensor, w: dict[str, Any]) -> Tensor:
        g, u = self._lin(_rms(x, w["ln2"], self.eps), w, "gu").chunk(2, dim=-1)
        return self._lin(F.silu(g) * u, w, "down")

    def _layer_eager(self, x: Tensor, w: dict[str, Any], cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self._lin(self._attn(x, w, cos, sin), w, "o")
        return x + self._mlp(x, w)

    def _forward(self, ids: Tensor, last: Tensor, token_ids: Tensor) -> Tensor:
        """log-probabilities of ``token_ids`` at position ``last`` of each row: (batch, len(token_ids))."""
        cos, sin = self._rope(ids.shape[1])
        x = F.embedding(ids, self.embed)
        for w in self.layers[:-1]:
            x = self._layer(x, w, cos, sin)
        w = self.layers[-1]
        rows = torch.arange(ids.shape[0], device=ids.device)
        a = self._attn(x, w, cos, sin)[rows, last]  # only the last position matters from here on
        xl = x[rows, last] + F.linear(a, w["o"])
        xl = xl + self._mlp(xl, w)
        logits = F.linear(_rms(xl, self.norm, self.eps), self.head).float()
        return torch.log_softmax(logits, dim=-1)[:, token_ids]

    @torch.inference_mode()
    def logprobs(self, seqs: Sequence[Sequence[int]], token_ids: Sequence[int], pad_id: int = 0) -> Tensor:
        """Right-pad ``seqs`` to a length bucket and return (len(seqs), len(token_ids)) log-probabilities
        of the next token, on the CPU."""
        n, longest = len(seqs), max(len(s) for s in seqs)
        t = _bucket(longest, LEN_BUCKETS) if self.graphs_on else longest
        bsz = _bucket(n, self.batch_buckets) if self.graphs_on else n
        arr = np.full((bsz, t), pad_id, dtype=np.int64)
        lens = np.ones(bsz, dtype=np.int64)
        for i, s in enumerate(seqs):
            arr[i, : len(s)] = s
            lens[i] = len(s)
        ids, last = torch.from_numpy(arr), torch.from_numpy(lens - 1)
        tok = torch.as_tensor(list(token_ids), dtype=torch.long, device=self.device)
        if not self.graphs_on:
            return self._forward(ids.to(self.device), last.to(self.device), tok)[:n].cpu()
        return self._replay(ids, last, tok)[:n].cpu()

    def warmup(self, lengths: Sequence[int], max_batch: int, token_ids: Sequence[int]) -> None:
        """Compile and capture every (batch bucket, length bucket) up to ``max_batch`` ahead of traffic."""
        for t in lengths:
            for b in self.batch_buckets:
                if b <= max_batch:
                    self.logprobs([[1] * t] * b, token_ids)

    def _replay(self, ids: Tensor, last: Tensor, tok: Tensor) -> Tensor:
        key = (ids.shape[0], ids.shape[1])
        if key not in self._graphs:
            self._graphs[key] = self._capture(ids, last, tok)
        graph, s_ids, s_last, out = self._graphs[key]
        s_ids.copy_(ids.pin_memory(), non_blocking=True)
        s_last.copy_(last.pin_memory(), non_blocking=True)
        graph.replay()
        return out.clone()

    def _capture(self, ids: Tensor, last: Tensor, tok: Tensor) -> tuple[Any, Tensor, Tensor, Tensor]:
        s_ids, s_last = ids.to(self.device), last.to(self.device)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):
                self._forward(s_ids, s_last, tok)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            out = self._forward(s_ids, s_last, tok)
        self._pool = graph.pool()
        return graph, s_ids, s_last, out
