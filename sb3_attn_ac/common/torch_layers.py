"""Transformer layers for the episode critic: sliding-window attention that never crosses an episode boundary.

Every layer lets a token attend to the tokens of its own episode at most ``context_len - 1`` steps away
(only earlier ones in causal rows, both ways in the masked rows of the contrastive pass). A key j is allowed
for the query i when it is valid, belongs to the same episode and ``0 <= ts_i - ts_j < K`` (causal) or
``|ts_i - ts_j| < K`` (both ways), where ``ts`` is the step's index within its episode. With a local window
``w < K`` a key at least ``w`` steps away is allowed only if it is its episode's first step (``ts_j == 0``).

Positions are relative: each head adds a learned bias per offset ``ts_i - ts_j`` to its attention scores
(:class:`WindowAttention`), and the first step of every episode carries a learned start embedding
(:class:`EpisodeStartEmbedding`). Keys and values hold no position, so a cached step's keys and values never
change as the window slides. (The sinusoidal embedding of the absolute episode step, :class:`SinusoidalPositions`,
is what models saved by sb3-attn-ac 0.1 use.)

Long streams are cut into chunks of K queries, each attending to a window of ``W = left + K + right`` keys, so
the cost is linear in the stream length (short streams, where it is cheaper, use one dense window)::

    keys    |<- K-1 ->|<---- chunk c (K queries) ---->|<- K-1 (rows that look ahead) ->|
    queries           |q q q q q q q q q q q q q q q q|
"""

import copy
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


def dropout_layer(p: float) -> nn.Module:
    """nn.Dropout(p), or nn.Identity when p == 0 (a zero-rate dropout still costs an autograd node)."""
    return nn.Dropout(p) if p > 0 else nn.Identity()


def stream_prefix_len(n_layers: int, context_len: int, local_window: int | None, prev_obs: bool = False) -> int:
    """Steps of context a stream must hold before a token for that token's output to be the one it had while
    acting: the receptive field ``n_layers * (context_len - 1)``, or with a local window w the last
    ``n_layers * (w - 1)`` steps and one more column for the episode's first step (beyond the local window a layer
    reads only that step, whose outputs depend on itself alone), where that is fewer. With ``prev_obs`` each token
    also reads the step before it, one more step.

    :param n_layers: transformer blocks
    :param context_len: K, each layer's window
    :param local_window: w <= K, or None
    :param prev_obs: whether each token embeds the previous step's features (:func:`previous_steps`)
    """
    full = n_layers * (context_len - 1)
    return int(prev_obs) + (full if local_window is None else min(full, 1 + n_layers * (local_window - 1)))


def keeps_first_step(n_layers: int, context_len: int, local_window: int | None) -> bool:
    """Whether :func:`stream_prefix_len`'s context is a local window's: its first column holds the episode's first
    step wherever that lies before the other columns (see
    :class:`~sb3_attn_ac.common.attention.buffers.EpisodeBufferMixin`)."""
    return stream_prefix_len(n_layers, context_len, local_window) < n_layers * (context_len - 1)


def previous_steps(x: th.Tensor, meta: TokenMeta, hidden: th.Tensor | None = None) -> th.Tensor:
    """Each token's previous step of the same episode: the column before it where that column holds the step just
    before (valid, same episode, one step earlier), zero elsewhere (an episode's first step, or a context whose
    earlier step was not kept).

    :param x: (B, T, F) per-step values
    :param meta: (B, T) their metadata
    :param hidden: (B, T) columns whose value the next token must not see (the masked copy's masked steps)
    :return: (B, T, F)
    """
    follows = (meta.timesteps[:, 1:] == meta.timesteps[:, :-1] + 1) & (meta.episode_ids[:, 1:] == meta.episode_ids[:, :-1])
    follows &= meta.valid[:, :-1]
    if hidden is not None:
        follows &= ~hidden[:, :-1]
    return F.pad(x[:, :-1] * follows[..., None], (0, 0, 1, 0))


class Band:
    """Layout (one window or chunks) and attention mask shared by all layers of one forward pass.

    :param meta: (B, T) metadata of the tokens
    :param context_len: K, the attention window
    :param causal: True, False, or a (B,) bool tensor: per row, attend only to earlier tokens or both ways
    :param local_window: w <= K: a key at least w steps away is allowed only if it is its episode's first step
        (None: every key in the window)
    """

    def __init__(
        self, meta: TokenMeta, context_len: int, causal: bool | th.Tensor = True, local_window: int | None = None
    ) -> None:
        B, T = meta.timesteps.shape
        causal = th.full((B,), causal, device=meta.timesteps.device) if isinstance(causal, bool) else causal
        self.length = T
        # Chunks of K queries, each seeing K - 1 keys before (and after, for rows that look ahead) ...
        self.chunk, self.left = context_len, context_len - 1
        self.right = 0 if bool(causal.all()) else context_len - 1
        self.n_chunks = -(-T // self.chunk)
        self.width = self.left + self.chunk + self.right
        # ... unless one dense T x T window is cheaper: it may score up to twice the keys of the chunks, since it
        # saves padding, unfolding the keys and values into windows and the backward pass's fold (CartPoleNoVel's
        # training streams of 48 steps: 2,304 vs 2,208 scores, 11% more training FPS dense; README "Partially
        # observed tasks").
        if T * T <= 2 * self.n_chunks * self.chunk * self.width:
            self.chunk, self.left, self.right, self.n_chunks, self.width = T, 0, 0, 1, T

        q_ts, q_ep, q_valid = (self.queries(m[:, None, :, None])[:, 0, ..., 0] for m in meta)  # (B, nC, C)
        k_ts, k_ep, k_valid = (self.windows(m[:, None, :, None])[:, 0, ..., 0] for m in meta)  # (B, nC, W)
        delta = q_ts[..., :, None] - k_ts[..., None, :]  # (B, nC, C, W)
        first_steps = (k_ts == 0)[..., None, :]  # (B, nC, 1, W): keys that are their episode's first step
        in_band = (delta.abs() < context_len) & ((delta >= 0) | ~causal[:, None, None, None])
        if local_window is not None:  # beyond the local window only the episode's first step
            in_band &= (delta.abs() < local_window) | first_steps
        allowed = in_band & (q_ep[..., :, None] == k_ep[..., None, :]) & k_valid[..., None, :]
        # A padding query attends to everything so that no softmax row is empty; its output is discarded.
        self.allowed = allowed | ~q_valid[..., :, None]  # (B, nC, C, W)
        self.attn_mask = self.allowed[:, None]  # (B, 1, nC, C, W): broadcast over heads
        # Index of each key's offset ts_i - ts_j in a per-head table of 2K - 1 offset biases (outside the band: masked).
        # Where every allowed key's offset is its distance in the stream (episodes of consecutive steps, as SB3's
        # streams and RLlib's sequences hold them), one table serves every row: B times fewer biases to gather, and
        # to scatter back in the backward pass.
        positions = th.arange(T, device=delta.device)[None, None, :, None]
        distance = self.queries(positions)[:, 0, ..., 0, None] - self.windows(positions)[:, 0, ..., None, :, 0]
        in_place = (delta == distance) | ~allowed
        # A local window's context holds its episode's first step out of place (a gap after it): one table still
        # serves every other key, and each query's offset to its first step (its own timestep) is looked up apart.
        # Only with a local window: elsewhere the per-row table stays, so that runs without one repeat 0.3.1's
        # floating point exactly (the same biases in another layout, which the attention kernel sums otherwise).
        self.start_offsets: th.Tensor | None = None
        if bool(in_place.all()):
            delta = distance  # (1, nC, C, W)
        elif local_window is not None and bool((in_place | first_steps).all()):
            delta = distance
            self.start_offsets = q_ts.clamp(max=context_len - 1) + context_len - 1  # (B, nC, C)
        self.offsets = delta.clamp(1 - context_len, context_len - 1) + context_len - 1  # (B or 1, nC, C, W)
        self.starts = first_steps[:, None]  # (B, 1, nC, 1, W)

    def select(self, rows: th.Tensor) -> "Band":
        """The same layout for a subset of the rows (e.g. a minibatch of a band built once per epoch)."""
        band = copy.copy(self)
        band.allowed = self.allowed[rows]
        band.attn_mask = band.allowed[:, None]
        band.offsets = self.offsets if len(self.offsets) == 1 else self.offsets[rows]
        band.start_offsets = None if self.start_offsets is None else self.start_offsets[rows]
        band.starts = self.starts[rows]
        return band

    def scores_mask(self, offset_bias: th.Tensor | None, start_bias: th.Tensor | None = None) -> th.Tensor:
        """The ``attn_mask`` of one layer: the boolean band, or (with relative positions) each head's offset bias
        (plus its start bias on the keys that are their episode's first step) on the allowed keys and -inf
        elsewhere.

        :param offset_bias: (H, 2K - 1) bias per head and offset ``ts_i - ts_j`` (from -(K - 1) to K - 1), or None
        :param start_bias: (H,) bias per head for its episode's first step, or None
        :return: (B, 1, nC, C, W) bool or (B, H, nC, C, W) float
        """
        if offset_bias is None:
            return self.attn_mask
        H = offset_bias.shape[0]
        bias = offset_bias[:, self.offsets.flatten()].view(H, *self.offsets.shape).transpose(0, 1)  # (B or 1, H, ...)
        if self.start_offsets is not None:  # each query's offset to its episode's first step
            to_start = offset_bias[:, self.start_offsets.flatten()].view(H, *self.start_offsets.shape).transpose(0, 1)
            bias = th.where(self.starts, to_start[..., None], bias)
        if start_bias is not None:
            bias = bias + start_bias[:, None, None, None] * self.starts
        return bias.masked_fill(~self.attn_mask, float("-inf"))

    def queries(self, z: th.Tensor) -> th.Tensor:
        """(B, H, T, d) -> (B, H, nC, C, d), zero-padded at the end."""
        if self.n_chunks == 1:
            return z[:, :, None]
        z = F.pad(z, (0, 0, 0, self.n_chunks * self.chunk - self.length))
        return z.view(*z.shape[:2], self.n_chunks, self.chunk, z.shape[-1])

    def windows(self, z: th.Tensor) -> th.Tensor:
        """(B, H, T, d) keys -> (B, H, nC, W, d): the keys each chunk of queries may see."""
        if self.n_chunks == 1:
            return z[:, :, None]
        z = F.pad(z, (0, 0, self.left, self.n_chunks * self.chunk - self.length + self.right))
        return z.unfold(2, self.width, self.chunk).transpose(-1, -2)  # (B, H, nC, W, d)

    def merge(self, z: th.Tensor) -> th.Tensor:
        """(B, H, nC, C, d) -> (B, T, H * d)."""
        B, H, _, _, d = z.shape
        z = z[:, :, 0] if self.n_chunks == 1 else z.reshape(B, H, -1, d)[:, :, : self.length]  # (B, H, T, d)
        return z.transpose(1, 2).reshape(B, self.length, H * d)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a :class:`Band` (``F.scaled_dot_product_attention``).

    With ``relative_positions`` each head adds a learned bias b[h, ts_i - ts_j] to its scores (as T5 / ALiBi,
    one entry per offset in the window, both signs for the rows that look ahead). The bias starts at zero and is
    stored divided by :attr:`OFFSET_BIAS_SCALE`: Adam's steps are about the learning rate per parameter whatever
    the gradient's size, so the scale lets *where* a head looks move that many times faster than *what* it reads
    (at PPO's step sizes an unscaled bias learned offset recall several times more slowly).

    :param d_model: token width
    :param n_heads: number of heads (must divide ``d_model``)
    :param dropout: dropout on attention weights and output
    :param context_len: K, the attention window
    :param relative_positions: learn a bias per head and offset
    :param start_bias: (with ``relative_positions``) also learn a bias per head for the episode's first step,
        stored scaled the same way, so a head can learn to read the first step from anywhere in the window as
        fast as it learns an offset
    :param local_window: w <= K: keys at least w steps back are allowed only if they are the episode's first step
        (None: every key in the window; see :class:`Band`)
    """

    OFFSET_BIAS_SCALE = 10.0

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float,
        context_len: int,
        relative_positions: bool,
        start_bias: bool = False,
        local_window: int | None = None,
    ) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.dropout = dropout
        self.resid_dropout = dropout_layer(dropout)
        self.context_len = context_len
        self.local_window = local_window
        self.offset_bias_raw = nn.Parameter(th.zeros(n_heads, 2 * context_len - 1)) if relative_positions else None
        self.start_bias_raw = nn.Parameter(th.zeros(n_heads)) if relative_positions and start_bias else None

    @property
    def offset_bias(self) -> th.Tensor | None:
        """(H, 2K - 1) score bias per head and offset ``ts_i - ts_j`` + K - 1 (None without relative positions)."""
        return None if self.offset_bias_raw is None else self.OFFSET_BIAS_SCALE * self.offset_bias_raw

    @property
    def start_bias(self) -> th.Tensor | None:
        """(H,) score bias per head for the key that is its episode's first step (None without one)."""
        return None if self.start_bias_raw is None else self.OFFSET_BIAS_SCALE * self.start_bias_raw

    def init_alibi(self) -> None:
        """Set the offset biases to ALiBi's linear recency penalty (Press et al., 2022): head h of H scores the
        offset o with -m_h * |o|, m_h = 2^(-8 (h + 1) / H) (two heads: 1/16 and 1/256). A prior only: they stay
        learned. Where a window is long, the steep head starts reading the last steps instead of averaging the
        whole window, and the softmax then gives its recent offsets the gradient a short window would."""
        if self.offset_bias_raw is None:
            raise ValueError("init_alibi needs relative positions (relative_positions=True)")
        H, K = self.n_heads, self.context_len
        slopes = 2.0 ** (-8.0 * th.arange(1, H + 1, dtype=th.float32) / H)  # (H,)
        offsets = th.arange(1 - K, K, dtype=th.float32).abs()  # (2K - 1,) as the biases' index
        with th.no_grad():
            self.offset_bias_raw.copy_(-slopes[:, None] * offsets / self.OFFSET_BIAS_SCALE)

    def forward(
        self, x: th.Tensor, band: Band, past: tuple[th.Tensor, th.Tensor] | None = None
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """(B, T, D) -> (B, T, D) output, and this layer's keys and values, each (B, H, T, d).

        With ``past`` (cached keys and values of P earlier steps, each (B, H, P, d)) the band covers those P steps
        then the T new ones; the keys and values returned are then (B, H, P + T, d).
        """
        B, T, D = x.shape
        H = self.n_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)  # each (B, H, T, d)
        P = 0
        if past is not None:  # the cached steps come first; their zero queries' outputs are dropped below
            P = past[0].shape[2]
            q = F.pad(q, (0, 0, P, 0))  # (B, H, P + T, d)
            k, v = th.cat([past[0], k], dim=2), th.cat([past[1], v], dim=2)
        y = F.scaled_dot_product_attention(
            band.queries(q),  # (B, H, nC, C, d)
            band.windows(k),  # (B, H, nC, W, d)
            band.windows(v),
            attn_mask=band.scores_mask(self.offset_bias, self.start_bias),
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.resid_dropout(self.proj(band.merge(y)[:, P:])), k, v

    def weights(self, x: th.Tensor, band: Band) -> th.Tensor:
        """The attention weights of :meth:`forward` (without dropout), as dense (B, H, T, T) matrices
        (diagnostics: an explicit softmax instead of the fused kernel).

        :param x: (B, T, D) layer input
        :param band: layout and mask
        """
        B, T, D = x.shape
        H = self.n_heads
        q, k, _ = self.qkv(x).view(B, T, 3, H, D // H).permute(2, 0, 3, 1, 4)
        scores = band.queries(q) @ band.windows(k).transpose(-1, -2) / math.sqrt(D // H)  # (B, H, nC, C, W)
        mask = band.scores_mask(self.offset_bias, self.start_bias)
        weights = (scores + mask if mask.is_floating_point() else scores.masked_fill(~mask, float("-inf"))).softmax(dim=-1)
        C, W = band.chunk, band.width
        dense = weights.new_zeros(B, H, band.n_chunks * C, band.n_chunks * C + band.left + band.right)
        for c in range(band.n_chunks):  # chunk c's window starts at key c * C in left-padded coordinates
            dense[:, :, c * C : (c + 1) * C, c * C : c * C + W] = weights[:, :, c]
        return dense[:, :, :T, band.left : band.left + T]

    def step(
        self, x: th.Tensor, keys: th.Tensor, values: th.Tensor, valid: th.Tensor, timesteps: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """One new token per row, attending to itself and its cached predecessors.

        :param x: (B, D) layer input of the new tokens
        :param keys: (B, H, K - 1, d) cached keys of the previous K - 1 steps
        :param values: (B, H, K - 1, d) cached values
        :param valid: (B, K - 1) which cache slots hold steps of the same episode
        :param timesteps: (B,) the new tokens' index within their episodes (where the first step sits)
        :return: (B, D) output, and keys and values with the new token appended, each (B, H, K, d)
        """
        B, D = x.shape
        q, k, v = self.qkv(x).view(B, 3, self.n_heads, 1, D // self.n_heads).unbind(1)  # each (B, H, 1, d)
        keys, values = th.cat([keys, k], dim=2), th.cat([values, v], dim=2)
        K = self.context_len
        mask = F.pad(valid, (0, 1), value=True)  # (B, K)
        starts = None
        if self.local_window is not None or self.start_bias is not None:
            # Slot j of the K holds the step K - 1 - j steps back; the episode's first step sits in slot K - 1 - t
            # (if t < K).
            slots = th.arange(K, device=x.device)
            starts = slots == (K - 1 - timesteps)[:, None]  # (B, K)
            if self.local_window is not None:  # beyond the local window only the first step
                mask = mask & ((slots >= K - self.local_window) | starts)
        mask = mask[:, None, None]  # (B, 1, 1, K)
        bias = self.offset_bias
        if bias is not None:  # offsets K - 1 ... 0
            scores = bias[:, K - 1 :].flip(-1)[None, :, None]  # (1, H, 1, K)
            if self.start_bias is not None:  # (then starts is set)
                scores = scores + self.start_bias[None, :, None, None] * starts[:, None, None]
            mask = scores.masked_fill(~mask, float("-inf"))  # (B, H, 1, K)
        y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)  # (B, H, 1, d)
        return self.proj(y.reshape(B, D)), keys, values


class Block(nn.Module):
    """Pre-LayerNorm transformer block (as GPT-2 / nanoGPT): x + attn(ln(x)), then x + mlp(ln(x)).

    The MLP uses ReLU (as GTrXL): on one CPU thread GELU costs three times as much for no gain here.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float,
        context_len: int,
        relative_positions: bool,
        start_bias: bool,
        local_window: int | None = None,
    ) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model)
        self.attn = WindowAttention(d_model, n_heads, dropout, context_len, relative_positions, start_bias, local_window)
        self.ln_2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 2 * d_model), nn.ReLU(), nn.Linear(2 * d_model, d_model), dropout_layer(dropout)
        )

    def forward(
        self, x: th.Tensor, band: Band, past: tuple[th.Tensor, th.Tensor] | None = None
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        y, k, v = self.attn(self.ln_1(x), band, past)
        x = x + y
        return x + self.mlp(self.ln_2(x)), k, v

    def step(
        self, x: th.Tensor, keys: th.Tensor, values: th.Tensor, valid: th.Tensor, timesteps: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        y, keys, values = self.attn.step(self.ln_1(x), keys, values, valid, timesteps)
        x = x + y
        return x + self.mlp(self.ln_2(x)), keys, values


class EpisodeTransformer(nn.Module):
    """A stack of :class:`Block` with sliding-window attention inside episodes, and a final LayerNorm.

    The receptive field is ``n_layers * (context_len - 1)`` earlier steps: windows stack.

    :param d_model: token width
    :param n_layers: number of blocks
    :param n_heads: attention heads per block
    :param context_len: K, each layer's attention window (the token itself and K - 1 neighbours)
    :param dropout: dropout rate
    :param relative_positions: each head learns a bias per offset in the window (see :class:`WindowAttention`)
    :param start_bias: (with ``relative_positions``) and one for the episode's first step
    :param local_window: w <= K: beyond the last w steps a layer sees only the episode's first step (None: all K)
    """

    def __init__(
        self,
        d_model: int,
        n_layers: int,
        n_heads: int,
        context_len: int,
        dropout: float,
        relative_positions: bool = True,
        start_bias: bool = False,
        local_window: int | None = None,
    ) -> None:
        super().__init__()
        self.context_len = context_len
        self.local_window = local_window
        self.blocks = nn.ModuleList(
            Block(d_model, n_heads, dropout, context_len, relative_positions, start_bias, local_window)
            for _ in range(n_layers)
        )
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

    def init_alibi(self) -> None:
        """Start every layer's offset biases as ALiBi's slopes (:meth:`WindowAttention.init_alibi`)."""
        for block in self.blocks:
            block.attn.init_alibi()

    def band(self, meta: TokenMeta, causal: bool | th.Tensor = True) -> Band:
        """The attention layout and mask of this transformer's window for tokens with metadata ``meta``.

        :param meta: (B, T) metadata
        :param causal: True, False, or per row (see :class:`Band`)
        """
        return Band(meta, self.context_len, causal, self.local_window)

    @property
    def receptive_field(self) -> int:
        """How many earlier steps can influence a token's output."""
        return len(self.blocks) * (self.context_len - 1)

    def forward(self, x: th.Tensor, band: Band) -> th.Tensor:
        """
        :param x: (B, T, D) input tokens (embedding + position embedding)
        :param band: layout and mask built from the tokens' metadata
        :return: (B, T, D) outputs
        """
        for block in self.blocks:
            x = block(x, band)[0]
        return self.ln_f(x)

    def attention_weights(self, x: th.Tensor, band: Band) -> list[th.Tensor]:
        """Every layer's attention weights for :meth:`forward`'s inputs, each (B, H, T, T): row i holds how
        much step i attends to each step (zero outside its window and episode). Diagnostics only.

        :param x: (B, T, D) input tokens (embedding + position embedding)
        :param band: layout and mask
        """
        weights = []
        for block in self.blocks:
            weights.append(block.attn.weights(block.ln_1(x), band))
            x = block(x, band)[0]
        return weights

    def forward_with_keys(self, x: th.Tensor, band: Band) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """:meth:`forward`, also returning every layer's keys and values of every token (from which
        :meth:`~sb3_attn_ac.common.attention.policies.AttnActorCriticPolicy.cache_from_stream` fills a warm
        :class:`KVCache`).

        :return: (B, T, D) outputs, keys and values each (n_layers, B, H, T, d)
        """
        keys, values = [], []
        for block in self.blocks:
            x, k, v = block(x, band)
            keys.append(k)
            values.append(v)
        return self.ln_f(x), th.stack(keys), th.stack(values)

    def forward_from_cache(self, x: th.Tensor, band: Band, cache: "KVCache") -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """:meth:`forward` over tokens that continue the rows of ``cache`` (the batched form of T :meth:`step` calls,
        e.g. RLlib's training sequences, whose state is the cache at their first step). ``band`` covers the K - 1
        cached steps (``cache.valid``), then the T new tokens.

        :param x: (B, T, D) new tokens (embedding + position)
        :param band: layout and mask of the K - 1 + T steps
        :param cache: the K - 1 steps before the new tokens, every layer
        :return: (B, T, D) outputs, and every layer's keys and values of the K - 1 + T steps, each
            (n_layers, B, H, K - 1 + T, d)
        """
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block(x, band, (cache.keys[i], cache.values[i]))
            keys.append(k)
            values.append(v)
        return self.ln_f(x), th.stack(keys), th.stack(values)

    def step(self, x: th.Tensor, cache: "KVCache", timesteps: th.Tensor) -> tuple[th.Tensor, "KVCache"]:
        """Incremental (acting-time) pass: one new token per row, cost independent of its position.

        :param x: (B, D) new tokens (embedding + position)
        :param cache: the previous K - 1 steps' keys and values of every layer
        :param timesteps: (B,) the new tokens' index within their episodes
        :return: (B, D) outputs and the cache rolled forward by one step
        """
        new_keys, new_values = [], []
        for i, block in enumerate(self.blocks):
            x, k, v = block.step(x, cache.keys[i], cache.values[i], cache.valid, timesteps)
            new_keys.append(k[:, :, 1:])  # drop the oldest step: the window slides
            new_values.append(v[:, :, 1:])
        valid = th.cat([cache.valid, th.ones_like(cache.valid[:, :1])], dim=1)[:, 1:]
        return self.ln_f(x), KVCache(th.stack(new_keys), th.stack(new_values), valid)


class KVCache(NamedTuple):
    """Rolling key/value cache of the last K - 1 steps of each row's running episode, for every layer.

    :param keys: (n_layers, B, H, K - 1, d)
    :param values: (n_layers, B, H, K - 1, d)
    :param valid: (B, K - 1) slots holding steps of the running episode (oldest first)
    :param last: (B, F) with ``prev_obs``: each row's last step's features, which the next token embeds (None
        without; zero where the running episode has no step yet)
    """

    keys: th.Tensor
    values: th.Tensor
    valid: th.Tensor
    last: th.Tensor | None = None

    @classmethod
    def from_stream(cls, keys: th.Tensor, values: th.Tensor, meta: TokenMeta, context_len: int) -> "KVCache":
        """The cache after each row's last token: the steps of that token's episode, each in the slot of how many
        steps before the next token it lies (by episode step, not column, so a stream whose first column is the
        episode's first step with a gap after it, as a local window's context, fills the slots the window reads).

        :param keys: (n_layers, B, H, P, d) every layer's keys of the stream's tokens
            (:meth:`EpisodeTransformer.forward_with_keys`)
        :param values: (n_layers, B, H, P, d) their values
        :param meta: (B, P) the tokens' metadata
        :param context_len: K
        """
        n_layers, B, H, _, d = keys.shape
        n = context_len - 1
        back = meta.timesteps[:, -1:] + 1 - meta.timesteps  # (B, P) steps before the next token
        held = meta.valid & (meta.episode_ids == meta.episode_ids[:, -1:]) & (back >= 1) & (back <= n)
        rows, cols = held.nonzero(as_tuple=True)
        slots = n - back[rows, cols]  # slot j holds the step K - 1 - j before the next token
        cached_keys, cached_values = keys.new_zeros(n_layers, B, H, n, d), values.new_zeros(n_layers, B, H, n, d)
        cached_keys[:, rows, :, slots] = keys[:, rows, :, cols]
        cached_values[:, rows, :, slots] = values[:, rows, :, cols]
        valid = th.zeros(B, n, dtype=th.bool, device=keys.device)
        valid[rows, slots] = True
        return cls(cached_keys, cached_values, valid)

    def split(self, n_layers: int, parts: int) -> list["KVCache"]:
        """The caches of ``parts`` transformers of ``n_layers`` each held in this one (their layers stacked in order,
        their last features side by side), one per transformer.

        :param n_layers: each transformer's layers
        :param parts: how many transformers
        """
        if parts == 1:
            return [self]
        width = None if self.last is None else self.last.shape[-1] // parts
        return [
            KVCache(
                self.keys[i * n_layers : (i + 1) * n_layers],
                self.values[i * n_layers : (i + 1) * n_layers],
                self.valid,
                None if width is None else self.last[:, i * width : (i + 1) * width],  # type: ignore[index]
            )
            for i in range(parts)
        ]

    @staticmethod
    def join(parts: list["KVCache"]) -> "KVCache":
        """One cache holding the caches of several transformers (the inverse of :meth:`split`); their slots must
        agree, as they do for transformers that read the same steps."""
        if len(parts) == 1:
            return parts[0]
        last = None if parts[0].last is None else th.cat([part.last for part in parts], dim=-1)  # type: ignore[misc]
        return KVCache(th.cat([p.keys for p in parts]), th.cat([p.values for p in parts]), parts[0].valid, last)

    def reset(self, rows: th.Tensor) -> "KVCache":
        """Empty the cache of the rows where a new episode starts.

        :param rows: (B,) bool
        """
        last = None if self.last is None else self.last * ~rows[:, None]
        return KVCache(self.keys, self.values, self.valid & ~rows[:, None], last)


class SinusoidalPositions(nn.Module):
    """Sinusoidal embedding of a step's index within its episode (Vaswani et al., 2017).

    :param d_model: embedding width
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


class EpisodeStartEmbedding(nn.Module):
    """A learned embedding added to the first step of every episode, nothing elsewhere: with relative positions
    (offset biases) it is what tells a step where its episode began, without blurring later steps' tokens.

    :param d_model: embedding width
    """

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.start = nn.Parameter(0.02 * th.randn(d_model))  # the scale of the token embedding's init

    def forward(self, timesteps: th.Tensor) -> th.Tensor:
        """(...,) integer timesteps -> (..., d_model)."""
        return (timesteps == 0).to(self.start.dtype)[..., None] * self.start


class EpisodeEncoder(nn.Module):
    """Per-step features to per-step transformer outputs: a token embedding, a position embedding, optionally an
    embedding of the previous step's action, and an :class:`EpisodeTransformer`, under the attribute names the
    policy uses for its critic's parts (a separate actor transformer is one of these).

    :param features_dim: width of the per-step features
    :param d_model: token width
    :param n_layers: transformer blocks
    :param n_heads: attention heads per block
    :param context_len: K, each layer's attention window
    :param dropout: dropout rate
    :param relative_positions: offset biases and a start embedding (else sinusoidal episode-step positions)
    :param action_dim: width of the previous action's encoding added to each token (0: none)
    :param start_bias: (with ``relative_positions``) each head also learns a bias for the episode's first step
    :param local_window: w <= K: beyond the last w steps a layer sees only the episode's first step (None: all K)
    :param prev_obs: each token also embeds the previous step's features (:func:`previous_steps`)
    """

    def __init__(
        self,
        features_dim: int,
        d_model: int,
        n_layers: int,
        n_heads: int,
        context_len: int,
        dropout: float,
        relative_positions: bool,
        action_dim: int = 0,
        start_bias: bool = False,
        local_window: int | None = None,
        prev_obs: bool = False,
    ) -> None:
        super().__init__()
        self.token_embedding = nn.Linear(features_dim, d_model)
        self.action_embedding = nn.Linear(action_dim, d_model, bias=False) if action_dim else None
        self.prev_obs_embedding = nn.Linear(features_dim, d_model, bias=False) if prev_obs else None
        self.positions = EpisodeStartEmbedding(d_model) if relative_positions else SinusoidalPositions(d_model)
        self.transformer = EpisodeTransformer(
            d_model, n_layers, n_heads, context_len, dropout, relative_positions, start_bias, local_window
        )
