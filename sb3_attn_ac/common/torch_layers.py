"""Transformer layers for the episode critic: sliding-window attention that never crosses an episode boundary.

Every layer lets a token attend to the tokens of its own episode at most ``context_len - 1`` steps away
(only earlier ones when causal). The sequence is cut into chunks of ``C`` queries; each chunk attends to a
window of ``W = left + C + right`` keys, so the cost is linear in the sequence length::

    keys    |<- left ->|<--- chunk c (C queries) --->|<- right ->|
    queries            |q q q q q q q q q q q q q q q|

A key at stream position j is allowed for the query at position i when it is valid, belongs to the same
episode and ``0 <= ts_i - ts_j < K`` (causal) or ``|ts_i - ts_j| < K`` (both ways), where ``ts`` is the step's
index within its episode. Positions come from that index, so a token's keys and values never change once
computed: a layer's inputs for the last ``K - 1`` tokens are all a later segment needs (:class:`Memory`).
"""

import math
from typing import NamedTuple

import torch as th
from torch import nn
from torch.nn import functional as F


class TokenMeta(NamedTuple):
    """Per-token bookkeeping of a batch of streams, each of shape (B, T).

    :param timesteps: index of the step within its episode (drives positions and the attention band)
    :param episode_ids: tokens attend only to tokens with the same id
    :param valid: False for padding
    """

    timesteps: th.Tensor
    episode_ids: th.Tensor
    valid: th.Tensor


class Memory(NamedTuple):
    """The inputs of every layer for the last (at most ``K - 1``) tokens before a segment, and their metadata.

    :param hidden: one (B, M, D) tensor per layer
    :param meta: metadata of the M memory tokens
    """

    hidden: tuple[th.Tensor, ...]
    meta: TokenMeta


def cat_meta(first: TokenMeta, second: TokenMeta) -> TokenMeta:
    """Concatenate two token metadata along time."""
    return TokenMeta(*(th.cat([a, b], dim=1) for a, b in zip(first, second, strict=True)))


def tail_meta(meta: TokenMeta, n: int) -> TokenMeta:
    """The last ``n`` tokens' metadata."""
    return TokenMeta(*(m[:, m.shape[1] - n :] for m in meta))


class Band:
    """Chunked sliding-window layout and attention mask shared by all layers of one forward pass.

    :param meta: metadata of the T query tokens
    :param memory_meta: metadata of M (<= K - 1) tokens just before the queries, or None
    :param context_len: K, the attention window
    :param causal: attend only to earlier tokens (value pass) or both ways (masked pass)
    """

    def __init__(self, meta: TokenMeta, memory_meta: TokenMeta | None, context_len: int, causal: bool) -> None:
        B, T = meta.timesteps.shape
        self.length = T
        self.n_memory = 0 if memory_meta is None else memory_meta.timesteps.shape[1]
        self.left = context_len - 1
        self.right = 0 if causal else context_len - 1
        if self.n_memory > self.left:
            raise ValueError(f"memory holds {self.n_memory} tokens, more than context_len - 1 = {self.left}")
        self.chunk = max(1, min(context_len, T))
        self.n_chunks = -(-T // self.chunk)
        self.width = self.left + self.chunk + self.right

        key_meta = meta if memory_meta is None else cat_meta(memory_meta, meta)
        q_ts = self.queries(meta.timesteps[:, None, :, None])[:, 0, :, :, 0]  # (B, nC, C)
        q_ep = self.queries(meta.episode_ids[:, None, :, None])[:, 0, :, :, 0]
        q_valid = self.queries(meta.valid[:, None, :, None])[:, 0, :, :, 0]
        k_ts = self.windows(key_meta.timesteps[:, None, :, None])[:, 0, :, :, 0]  # (B, nC, W)
        k_ep = self.windows(key_meta.episode_ids[:, None, :, None])[:, 0, :, :, 0]
        k_valid = self.windows(key_meta.valid[:, None, :, None])[:, 0, :, :, 0]
        delta = q_ts[..., :, None] - k_ts[..., None, :]  # (B, nC, C, W)
        in_band = (delta >= 0) & (delta < context_len) if causal else delta.abs() < context_len
        allowed = in_band & (q_ep[..., :, None] == k_ep[..., None, :]) & k_valid[..., None, :]
        # A padding query attends to everything so that no softmax row is empty; its output is discarded.
        self.allowed = allowed | ~q_valid[..., :, None]  # (B, nC, C, W)
        self.attn_mask = self.allowed[:, None]  # (B, 1, nC, C, W): broadcast over heads

    def queries(self, z: th.Tensor) -> th.Tensor:
        """(B, H, T, d) -> (B, H, nC, C, d), zero-padded at the end."""
        pad = self.n_chunks * self.chunk - self.length
        z = F.pad(z, (0, 0, 0, pad))
        return z.view(*z.shape[:2], self.n_chunks, self.chunk, z.shape[-1])

    def windows(self, z: th.Tensor) -> th.Tensor:
        """(B, H, M + T, d) keys -> (B, H, nC, W, d): the keys each chunk of queries may see."""
        pad_left = self.left - self.n_memory
        pad_right = self.n_chunks * self.chunk - self.length + self.right
        z = F.pad(z, (0, 0, pad_left, pad_right))
        return z.unfold(2, self.width, self.chunk).transpose(-1, -2)  # (B, H, nC, W, d)

    def merge(self, z: th.Tensor) -> th.Tensor:
        """(B, H, nC, C, d) -> (B, T, H * d)."""
        B, H, _, _, d = z.shape
        z = z.reshape(B, H, self.n_chunks * self.chunk, d)[:, :, : self.length]  # (B, H, T, d)
        return z.transpose(1, 2).reshape(B, self.length, H * d)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a :class:`Band` (scaled dot-product, fused kernels where available).

    :param d_model: token width
    :param n_heads: number of heads (must divide ``d_model``)
    :param dropout: dropout on attention weights and output
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: th.Tensor, memory: th.Tensor | None, band: Band, need_weights: bool = False) -> tuple[th.Tensor, th.Tensor | None]:
        """
        :param x: (B, T, D) layer input of the query tokens
        :param memory: (B, M, D) layer input of the memory tokens, or None
        :param band: layout and mask
        :param need_weights: also return the attention weights (B, H, T, W) (slower path)
        :return: (B, T, D) output and the weights or None
        """
        B, T, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).split(D, dim=-1)
        if memory is not None:
            # Memory tokens only serve as keys and values: skip their query projection.
            k_mem, v_mem = F.linear(memory, self.qkv.weight[D:], self.qkv.bias[D:]).split(D, dim=-1)
            k, v = th.cat([k_mem, k], dim=1), th.cat([v_mem, v], dim=1)
        q = band.queries(q.view(B, T, H, D // H).transpose(1, 2))  # (B, H, nC, C, d)
        k = band.windows(k.view(B, -1, H, D // H).transpose(1, 2))  # (B, H, nC, W, d)
        v = band.windows(v.view(B, -1, H, D // H).transpose(1, 2))
        weights = None
        if need_weights:
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(D // H)
            weights = scores.masked_fill(~band.attn_mask, float("-inf")).softmax(dim=-1)
            y = weights @ v
        else:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=band.attn_mask, dropout_p=p)
        return self.resid_dropout(self.proj(band.merge(y))), weights


class Block(nn.Module):
    """Pre-LayerNorm transformer block (as GPT-2 / nanoGPT): x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = WindowAttention(d_model, n_heads, dropout)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model), nn.Dropout(dropout)
        )

    def forward(self, x: th.Tensor, memory: th.Tensor | None, band: Band) -> th.Tensor:
        mem = None if memory is None else self.ln_1(memory)
        x = x + self.attn(self.ln_1(x), mem, band)[0]
        return x + self.mlp(self.ln_2(x))


class EpisodeTransformer(nn.Module):
    """A stack of :class:`Block` with sliding-window attention inside episodes, and a final LayerNorm.

    The receptive field is ``n_layers * (context_len - 1)`` earlier steps: windows stack.

    :param d_model: token width
    :param n_layers: number of blocks
    :param n_heads: attention heads per block
    :param context_len: K, each layer's attention window (the token itself and K - 1 neighbours)
    :param dropout: dropout rate
    """

    def __init__(self, d_model: int, n_layers: int, n_heads: int, context_len: int, dropout: float) -> None:
        super().__init__()
        self.context_len = context_len
        self.blocks = nn.ModuleList(Block(d_model, n_heads, dropout) for _ in range(n_layers))
        self.ln_f = nn.LayerNorm(d_model)
        self.apply(self._init_weights)
        # GPT-2's scaled init of the residual projections (1 / sqrt(2 * n_layers)).
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2 / nanoGPT initialisation: N(0, 0.02) weights, zero biases.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            nn.init.zeros_(module.bias)

    @property
    def receptive_field(self) -> int:
        """How many earlier steps can influence a token's output."""
        return len(self.blocks) * (self.context_len - 1)

    def forward(
        self, x: th.Tensor, meta: TokenMeta, memory: Memory | None = None, causal: bool = True, return_memory: bool = False
    ) -> tuple[th.Tensor, Memory | None]:
        """
        :param x: (B, T, D) input tokens (embedding + position)
        :param meta: their metadata
        :param memory: layer inputs of up to K - 1 tokens that precede ``x`` (causal passes only)
        :param causal: value pass (True) or masked pass (False, both ways)
        :param return_memory: also return the :class:`Memory` a following segment needs
        :return: (B, T, D) outputs and the memory (or None)
        """
        band = Band(meta, None if memory is None else memory.meta, self.context_len, causal)
        inputs = []
        for i, block in enumerate(self.blocks):
            inputs.append(x)
            x = block(x, None if memory is None else memory.hidden[i], band)
        if not return_memory:
            return self.ln_f(x), None
        n = self.context_len - 1
        if memory is not None:
            inputs = [th.cat([m, h], dim=1) for m, h in zip(memory.hidden, inputs, strict=True)]
            meta = cat_meta(memory.meta, meta)
        n = min(n, meta.timesteps.shape[1])
        new_memory = Memory(tuple(h[:, h.shape[1] - n :] for h in inputs), tail_meta(meta, n))
        return self.ln_f(x), new_memory

    def attention_weights(self, x: th.Tensor, meta: TokenMeta) -> list[th.Tensor]:
        """Causal attention weights of every layer, each (B, H, T, K) over the window ending at each step
        (diagnostics only: the slow, non-fused path).

        :param x: (B, T, D) input tokens
        :param meta: their metadata
        """
        band = Band(meta, None, self.context_len, causal=True)
        weights = []
        for block in self.blocks:
            y, w = block.attn(block.ln_1(x), None, band, need_weights=True)
            assert w is not None
            B, H, nC, C, W = w.shape
            # The causal part of each query's window: keys left..left+C; keep the K keys ending at the query.
            idx = th.arange(C, device=w.device)[:, None] + th.arange(band.left + 1, device=w.device)[None, :]
            w = th.gather(w, -1, idx.expand(B, H, nC, C, band.left + 1))
            weights.append(w.reshape(B, H, nC * C, band.left + 1)[:, :, : band.length])
            x = x + y
            x = x + block.mlp(block.ln_2(x))
        return weights


class SinusoidalPositions(nn.Module):
    """Sinusoidal embedding of a step's index within its episode (Vaswani et al., 2017).

    :param d_model: embedding width (even)
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        half = d_model // 2
        freqs = th.exp(-math.log(10_000.0) * th.arange(half, dtype=th.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)
        self.d_model = d_model

    def forward(self, timesteps: th.Tensor) -> th.Tensor:
        """(...,) integer timesteps -> (..., d_model)."""
        angles = timesteps.to(self.freqs.dtype)[..., None] * self.freqs
        out = th.cat([angles.sin(), angles.cos()], dim=-1)
        return F.pad(out, (0, self.d_model - out.shape[-1]))
