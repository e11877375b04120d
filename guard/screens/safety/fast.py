"""First-token scoring for Llama-architecture classifiers: one KV-less forward that returns the verdict
token's probabilities at the last prompt position only.

Why not ``model(ids).logits``: that computes logits for every position (512 x 128k vocab is about a quarter
of a 1B model's work at 512 tokens), builds a KV cache and launches hundreds of small kernels. Here:
fused QKV and gate/up weights, causal SDPA with right padding (pads come after each row's last token, so
causal attention never lets them change it, and no mask is needed), grouped K/V heads passed to SDPA as they
are (no repeat), and on CUDA a captured graph per (batch, length) bucket. The last layer works for one query
per row: K and V for every position, but Q, attention, MLP, final norm and head only at the last one.

In bf16 the residual stream is updated in place by the O and down projections (``addmm_``: the add happens
in the GEMM's epilogue), so each RMSNorm is one read of the stream and one write of its output. With
``compile_layers`` the stretches between those GEMMs (norm, QKV, RoPE, attention; norm, gate/up, SwiGLU) and
the last layer with the head are compiled graphs. On an H100 at 64 x 512 tokens the GEMMs are about 80% of
the time; the rest is SwiGLU (8%), attention (4%), norms and RoPE (5%).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from guard.compat import torch_fp8

GQA_REPEAT = False  # expand K/V heads before SDPA instead of enable_gqa (cuDNN and flash take grouped heads)
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

    def __init__(
        self,
        model: Any,
        cuda_graphs: bool = True,
        compile_layers: bool = False,
        fp8: bool = False,
        batch_buckets: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128),
    ) -> None:
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
        self._graphs: dict[tuple[int, int, tuple[int, ...]], tuple[Any, Tensor, Tensor, Tensor, Tensor, Tensor]] = {}
        self._pool: Any = None
        self._rope_cache: dict[int, tuple[Tensor, Tensor]] = {}
        self._tok_cache: dict[tuple[int, ...], Tensor] = {}
        self._attn_c: Callable[..., Tensor] = self._attn
        self._mlp_hidden_c: Callable[..., Tensor] = self._mlp_hidden
        self._layer_fp8_c: Callable[..., Tensor] = self._layer_fp8
        self._tail: Callable[..., Tensor] = self._tail_eager
        if compile_layers:  # one compiled graph per (batch, length) bucket: allow enough of them
            torch_fp8.raise_recompile_limits(256)
            self._attn_c = torch.compile(self._attn, dynamic=False)
            self._mlp_hidden_c = torch.compile(self._mlp_hidden, dynamic=False)
            self._layer_fp8_c = torch.compile(self._layer_fp8, dynamic=False)
            self._tail = torch.compile(self._tail_eager, dynamic=False)

    @staticmethod
    def _fuse(layer: Any, fp8: bool) -> dict[str, Any]:
        a, m = layer.self_attn, layer.mlp
        w = {
            "ln1": layer.input_layernorm.weight,
            "ln2": layer.post_attention_layernorm.weight,
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
        nq = a.q_proj.weight.shape[0]  # the last layer's Q and K/V halves: views of the fused weight
        for k, part in (("q", slice(None, nq)), ("kv", slice(nq, None))):
            w[k] = w["qkv"][part]
            if fp8:
                w[k + "8"], w[k + "_s"] = w["qkv8"][part], w["qkv_s"][:, part].contiguous()
        return w

    def _lin(self, x: Tensor, w: dict[str, Any], k: str) -> Tensor:
        """x @ W.T in bf16, or in FP8 (rowwise-scaled _scaled_mm) when enabled and the row count allows."""
        rows = x.numel() // x.shape[-1]
        if not self.fp8 or rows % 16:
            return F.linear(x, w[k])
        x2 = x.reshape(rows, x.shape[-1])
        xs = x2.abs().amax(dim=1, keepdim=True).float().clamp(min=1e-12) / 448.0
        xq = (x2.float() / xs).to(torch.float8_e4m3fn)
        y = torch_fp8.scaled_mm_rowwise(xq, w[k + "8"].t(), xs, w[k + "_s"], x.dtype)
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

    def _mlp_hidden(self, x: Tensor, w: dict[str, Any]) -> Tensor:
        g, u = self._lin(_rms(x, w["ln2"], self.eps), w, "gu").chunk(2, dim=-1)
        return F.silu(g) * u

    def _mlp(self, x: Tensor, w: dict[str, Any]) -> Tensor:
        return self._lin(self._mlp_hidden(x, w), w, "down")

    def _add_lin_(self, x: Tensor, inp: Tensor, w: dict[str, Any], k: str) -> None:
        """x += inp @ W.T in place: one bf16 GEMM with beta = 1, the residual add in its epilogue."""
        x.view(-1, x.shape[-1]).addmm_(inp.reshape(-1, inp.shape[-1]), w[k].t())

    def _layer(self, x: Tensor, w: dict[str, Any], cos: Tensor, sin: Tensor) -> Tensor:
        """One layer on the residual stream ``x``. In bf16 ``x`` is updated in place: the norms, RoPE,
        attention and SwiGLU (compiled, with ``compile_layers``) read it, the O and down projections add to
        it. In FP8 the whole layer is one graph, so that the activations' scaling fuses with its neighbours."""
        if self.fp8:
            return self._layer_fp8_c(x, w, cos, sin)
        self._add_lin_(x, self._attn_c(x, w, cos, sin), w, "o")
        self._add_lin_(x, self._mlp_hidden_c(x, w), w, "down")
        return x

    def _layer_fp8(self, x: Tensor, w: dict[str, Any], cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self._lin(self._attn(x, w, cos, sin), w, "o")
        return x + self._mlp(x, w)

    def _tail_eager(self, x: Tensor, w: dict[str, Any], cos: Tensor, sin: Tensor, last: Tensor) -> Tensor:
        """The last layer for one query per row (position ``last``), the final norm and the head's logits."""
        b, t, _ = x.shape
        h, kv, hd = self.heads, self.kv_heads, self.head_dim
        rows = torch.arange(b, device=x.device)
        xn = _rms(x, w["ln1"], self.eps)
        k, v = self._lin(xn, w, "kv").view(b, t, 2 * kv, hd).transpose(1, 2).split([kv, kv], dim=1)
        k = k * cos + _rotate_half(k) * sin  # (b, kv, t, hd)
        q = self._lin(xn[rows, last], w, "q").view(b, h, hd)
        cl, sl = cos[last][:, None], sin[last][:, None]
        q = (q * cl + _rotate_half(q) * sl).view(b, kv, h // kv, hd)  # head i reads K/V head i // (h // kv)
        s = torch.matmul(q.float(), k.float().transpose(-1, -2)) * hd**-0.5  # (b, kv, h // kv, t)
        pad = torch.arange(t, device=x.device)[None, :] > last[:, None]  # right padding: keys after `last`
        p = s.masked_fill(pad[:, None, None, :], float("-inf")).softmax(dim=-1)
        a = torch.matmul(p, v.float()).to(x.dtype).reshape(b, h * hd)
        xl = x[rows, last] + self._lin(a, w, "o")
        xl = xl + self._mlp(xl, w)
        return F.linear(_rms(xl, self.norm, self.eps), self.head)

    def _forward(self, ids: Tensor, last: Tensor, token_ids: Tensor) -> Tensor:
        """log-probabilities of ``token_ids`` at position ``last`` of each row: (batch, len(token_ids))."""
        cos, sin = self._rope(ids.shape[1])
        x = F.embedding(ids, self.embed)  # a fresh tensor: the layers update it in place
        for w in self.layers[:-1]:
            x = self._layer(x, w, cos, sin)
        logits = self._tail(x, self.layers[-1], cos, sin, last).float()
        return torch.log_softmax(logits, dim=-1)[:, token_ids]

    def _tok(self, token_ids: Sequence[int]) -> tuple[tuple[int, ...], Tensor]:
        key = tuple(int(i) for i in token_ids)
        if key not in self._tok_cache:
            self._tok_cache[key] = torch.tensor(key, dtype=torch.long, device=self.device)
        return key, self._tok_cache[key]

    @staticmethod
    def _fill(arr: np.ndarray, seqs: Sequence[Sequence[int]], lens: np.ndarray) -> None:
        """Right-padded rows of ``seqs`` into ``arr`` (already holding the pad id), in one numpy pass."""
        n, t = len(seqs), arr.shape[1]
        flat = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int64, count=int(lens.sum()))
        if (lens == t).all():
            arr[:n] = flat.reshape(n, t)
        else:
            arr[:n][np.arange(t)[None, :] < lens[:, None]] = flat

    @torch.inference_mode()
    def logprobs(self, seqs: Sequence[Sequence[int]], token_ids: Sequence[int], pad_id: int = 0) -> Tensor:
        """Right-pad ``seqs`` to a length bucket and return (len(seqs), len(token_ids)) log-probabilities
        of the next token, on the CPU."""
        n = len(seqs)
        lens = np.fromiter(map(len, seqs), dtype=np.int64, count=n)
        if (lens < 1).any():
            raise ValueError("empty sequence")
        longest = int(lens.max())
        t = _bucket(longest, LEN_BUCKETS) if self.graphs_on else longest
        bsz = _bucket(n, self.batch_buckets) if self.graphs_on else n
        key, tok = self._tok(token_ids)
        if not self.graphs_on:
            arr = np.full((bsz, t), pad_id, dtype=np.int64)
            self._fill(arr, seqs, lens)
            ids, last = torch.from_numpy(arr).to(self.device), torch.from_numpy(lens - 1).to(self.device)
            return self._forward(ids, last, tok)[:n].cpu()
        gkey = (bsz, t, key)
        if gkey not in self._graphs:
            self._graphs[gkey] = self._capture(bsz, t, tok)
        graph, s_ids, s_last, h_ids, h_last, out = self._graphs[gkey]
        arr, hl = h_ids.numpy(), h_last.numpy()  # pinned staging buffers: free again once the last call synced
        arr.fill(pad_id)
        self._fill(arr, seqs, lens)
        hl[:n] = lens - 1
        hl[n:] = 0
        s_ids.copy_(h_ids, non_blocking=True)
        s_last.copy_(h_last, non_blocking=True)
        graph.replay()
        return out[:n].cpu()

    def warmup(self, lengths: Sequence[int], max_batch: int, token_ids: Sequence[int]) -> None:
        """Compile and capture every (batch bucket, length bucket) up to ``max_batch`` ahead of traffic."""
        for t in lengths:
            for b in self.batch_buckets:
                if b <= max_batch:
                    self.logprobs([[1] * t] * b, token_ids)

    def _capture(self, bsz: int, t: int, tok: Tensor) -> tuple[Any, Tensor, Tensor, Tensor, Tensor, Tensor]:
        s_ids = torch.ones((bsz, t), dtype=torch.long, device=self.device)
        s_last = torch.full((bsz,), t - 1, dtype=torch.long, device=self.device)
        h_ids = torch.empty((bsz, t), dtype=torch.long, pin_memory=True)
        h_last = torch.empty((bsz,), dtype=torch.long, pin_memory=True)
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
        return graph, s_ids, s_last, h_ids, h_last, out
