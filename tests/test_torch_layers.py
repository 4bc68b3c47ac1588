import pytest
import torch as th
from torch import nn

from sb3_attn_ac.common.torch_layers import (
    Band,
    EpisodeTransformer,
    KVCache,
    SinusoidalPositions,
    TokenMeta,
    keeps_first_step,
    previous_steps,
    stream_prefix_len,
)


def make_meta(starts: list[int], T: int) -> TokenMeta:
    """One stream of T tokens with episodes starting at the given steps."""
    is_start = th.zeros(T, dtype=th.long)
    is_start[[s for s in starts if s < T]] = 1
    step = th.arange(T)
    last_start = th.cummax(th.where(is_start.bool(), step, 0), 0).values
    return TokenMeta((step - last_start)[None], th.cumsum(is_start, 0)[None], th.ones(1, T, dtype=th.bool))


def dense_allowed(meta: TokenMeta, K: int, causal: bool, local_window: int | None = None) -> th.Tensor:
    ts, ep = meta.timesteps[0], meta.episode_ids[0]
    delta = ts[:, None] - ts[None, :]
    band = (delta >= 0) & (delta < K) if causal else delta.abs() < K
    if local_window is not None:
        band &= (delta.abs() < local_window) | (ts == 0)[None, :]
    return band & (ep[:, None] == ep[None, :])


@pytest.mark.parametrize("T", [5, 37])  # one dense window, then chunks
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("local_window", [None, 2])
def test_band_mask_matches_dense_definition(T: int, causal: bool, local_window: int | None) -> None:
    K = 6
    meta = make_meta([0, 3, 9, 20], T)
    band = Band(meta, K, causal, local_window)
    # Scatter the chunked mask back to (T, T) and compare with the definition.
    got = th.zeros(T, T, dtype=th.bool)
    for c in range(band.n_chunks):
        for i in range(band.chunk):
            q = c * band.chunk + i
            if q >= T:
                continue
            for w in range(band.width):
                k = c * band.chunk + w - band.left
                if 0 <= k < T and band.allowed[0, c, i, w]:
                    got[q, k] = True
    assert th.equal(got, dense_allowed(meta, K, causal, local_window))


def random_transformer(D: int, n_layers: int, K: int) -> EpisodeTransformer:
    th.manual_seed(0)
    model = EpisodeTransformer(D, n_layers=n_layers, n_heads=2, context_len=K, dropout=0.0, start_bias=True).eval()
    for block in model.blocks:  # offset and start biases start at zero: make them matter (std 3 after the scale)
        nn.init.normal_(block.attn.offset_bias_raw, std=0.3)
        nn.init.normal_(block.attn.start_bias_raw, std=0.3)
    return model


def test_offset_bias_indexes_the_offset_back() -> None:
    """A dominant bias for offset k makes every step attend to the step k back in its episode (or, within the
    first k steps, spread over what it may see); the incremental path reads the same offsets."""
    K, k, T, D = 6, 2, 14, 8
    model = random_transformer(D, 1, K)
    with th.no_grad():
        model.blocks[0].attn.start_bias_raw.zero_()
        model.blocks[0].attn.offset_bias_raw.zero_()
        model.blocks[0].attn.offset_bias_raw[:, K - 1 + k] = 5.0  # bias 50 at offset ts_i - ts_j = k
    meta = make_meta([0, 9], T)
    x = th.randn(1, T, D)
    weights = model.attention_weights(x, Band(meta, K))[0][0]  # (H, T, T)
    for t in [2, 5, 8, 11, 13]:
        assert th.allclose(weights[:, t, t - k], th.ones(2), atol=1e-4), t
    assert th.allclose(weights[:, 9, 9], th.ones(2))  # an episode's first step sees only itself


def test_alibi_init_starts_the_steep_head_on_the_last_steps() -> None:
    """ALiBi's slopes as the offset biases' start (two heads: 1/16 and 1/256 per step back): before any
    learning, in a 64-step window head 0 puts most of its weight on the last 16 steps and head 1 spreads it
    almost evenly; zero biases (``relative``) weigh every step of the window alike."""
    K, D = 64, 8
    model = EpisodeTransformer(D, n_layers=1, n_heads=2, context_len=K, dropout=0.0).eval()
    with th.no_grad():  # zero queries and keys: the scores are the biases alone
        model.blocks[0].attn.qkv.weight.zero_()
    meta = make_meta([0], K)
    x = th.randn(1, K, D)
    uniform = model.attention_weights(x, Band(meta, K))[0][0][:, K - 1]  # (H, K): the last step's row
    assert th.allclose(uniform, th.full_like(uniform, 1 / K))
    model.init_alibi()
    bias = model.blocks[0].attn.offset_bias  # (H, 2K - 1), offset o at index K - 1 + o
    assert th.allclose(bias[:, K - 1 + 10], th.tensor([-10 / 16, -10 / 256]))
    assert th.equal(bias[:, K - 1 + 3], bias[:, K - 1 - 3])
    row = model.attention_weights(x, Band(meta, K))[0][0][:, K - 1]
    recent = row[:, K - 16 :].sum(-1)  # offsets 0-15
    assert recent[0] > 0.6 and 0.25 < recent[1] < 0.3, recent
    assert (row[:, 1:] >= row[:, :-1]).all()  # weights grow towards the current step


@pytest.mark.parametrize("T", [12, 40])  # dense window, then chunks
def test_start_bias_points_every_step_at_its_episodes_first_step(T: int) -> None:
    """A dominant start bias makes every step attend to its own episode's first step while that step is in the
    window (and only then: further on, the offset biases decide); acting reads the same slot."""
    K, D = 8, 8
    model = random_transformer(D, 1, K)
    with th.no_grad():
        model.blocks[0].attn.offset_bias_raw.zero_()
        model.blocks[0].attn.start_bias_raw.fill_(5.0)  # bias 50 on the first step
    starts = [0, 5, 20]
    meta = make_meta(starts, T)
    x = th.randn(1, T, D)
    weights = model.attention_weights(x, Band(meta, K))[0][0]  # (H, T, T)
    first = th.tensor([max(s for s in starts if s <= t) for t in range(T)])
    for t in range(T):
        if t - first[t] < K:
            assert th.allclose(weights[:, t, first[t]], th.ones(2), atol=1e-4), t
        else:
            assert weights[:, t, first[t]].eq(0).all() and not th.allclose(weights[:, t].max(-1).values, th.ones(2)), t
    # Acting: the incremental pass, slot by slot, gives the same outputs.
    batched = model(x, Band(meta, K))
    cache = KVCache(th.zeros(1, 1, 2, K - 1, D // 2), th.zeros(1, 1, 2, K - 1, D // 2), th.zeros(1, K - 1, dtype=th.bool))
    with th.no_grad():
        for t in range(T):
            out, cache = model.step(x[:, t], cache.reset(meta.timesteps[:, t] == 0), meta.timesteps[:, t])
            assert th.allclose(out[0], batched[0, t], atol=1e-5), t


@pytest.mark.parametrize("T", [14, 40])  # dense window, then chunks
def test_local_window_keeps_the_first_step_and_the_last_steps(T: int) -> None:
    """With a local window w < K a step attends to its last w steps and, up to K - 1 steps back, to its episode's
    first step, to nothing else (whatever the biases); acting (the cache of K - 1 steps) gives the same outputs."""
    K, w, D = 8, 3, 8
    th.manual_seed(0)
    model = EpisodeTransformer(D, n_layers=2, n_heads=2, context_len=K, dropout=0.0, start_bias=True, local_window=w)
    for block in model.eval().blocks:
        nn.init.normal_(block.attn.offset_bias_raw, std=0.3)
        nn.init.normal_(block.attn.start_bias_raw, std=0.3)
    starts = [0, 5, 20]
    meta = make_meta(starts, T)
    x = th.randn(1, T, D)
    weights = model.attention_weights(x, model.band(meta))[0][0]  # (H, T, T)
    for t in range(T):
        first = max(s for s in starts if s <= t)
        seen = {j for j in range(first, t + 1) if t - j < w} | ({first} if t - first < K else set())
        assert set(weights[0, t].nonzero().flatten().tolist()) == seen, t
    batched = model(x, model.band(meta))
    zeros = th.zeros(2, 1, 2, K - 1, D // 2)
    cache = KVCache(zeros, zeros.clone(), th.zeros(1, K - 1, dtype=th.bool))
    with th.no_grad():
        for t in range(T):
            out, cache = model.step(x[:, t], cache.reset(meta.timesteps[:, t] == 0), meta.timesteps[:, t])
            assert th.allclose(out[0], batched[0, t], atol=1e-5), t
        # The short context a rollout carries (stream_prefix_len: the episode's first step, then the last 2 * (w - 1)
        # steps, a gap between) warms a cache that continues exactly: after step 10, the first step is 6 back.
        assert stream_prefix_len(2, K, w) == 5 < 2 * (K - 1) and keeps_first_step(2, K, w)
        columns = th.tensor([5, 7, 8, 9, 10])
        context = TokenMeta(*(m[:, columns] for m in meta))
        _, keys, values = model.forward_with_keys(x[:, columns], model.band(context))
        cache = KVCache.from_stream(keys, values, context, K)
        assert cache.valid[0].tolist() == [False, True, False, True, True, True, True]  # 6 back, then 4, 3, 2, 1
        for t in range(11, T):
            out, cache = model.step(x[:, t], cache.reset(meta.timesteps[:, t] == 0), meta.timesteps[:, t])
            assert th.allclose(out[0], batched[0, t], atol=1e-5), t


def test_previous_steps_are_the_same_episodes_step_before() -> None:
    # Two streams: an episode restarting at column 3; a local window's context (first step, a gap, then steps 5-7)
    # whose second column is padding-free but not the first step's successor; and padding at the end.
    meta = TokenMeta(
        th.tensor([[4, 5, 6, 0, 1, 2], [0, 5, 6, 7, 0, 0]]),
        th.tensor([[1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 1]]),
        th.tensor([[True] * 6, [True, True, True, True, False, False]]),
    )
    x = th.arange(1.0, 13.0).view(2, 6, 1)
    assert previous_steps(x, meta)[..., 0].tolist() == [[0, 1, 2, 0, 4, 5], [0, 0, 8, 9, 0, 0]]
    # A hidden column (the masked copy's masked step) reaches no next token.
    hidden = th.zeros(2, 6, dtype=th.bool)
    hidden[0, 1] = True
    assert previous_steps(x, meta, hidden)[0, :, 0].tolist() == [0, 1, 0, 0, 4, 5]
    assert stream_prefix_len(2, 8, None, prev_obs=True) == 15 and stream_prefix_len(2, 8, 3, prev_obs=True) == 6


def test_chunked_attention_equals_dense_window() -> None:
    K, T, D = 4, 40, 16
    model = random_transformer(D, 2, K)
    meta = make_meta([0, 13], T)
    x = th.randn(1, T, D)
    chunked = model(x, Band(meta, K))  # T > 2K: chunked layout
    rf = model.receptive_field
    for t in [0, 5, 12, 13, 20, 39]:
        lo = max(0, t - rf)
        sub = TokenMeta(*(m[:, lo : t + 1] for m in meta))
        dense = model(x[:, lo : t + 1], Band(sub, K))  # short: one dense window
        assert th.allclose(chunked[0, t], dense[0, -1], atol=1e-5)


@pytest.mark.parametrize("T", [12, 37])  # one dense window, then chunks
def test_offset_table_is_shared_only_where_offsets_are_stream_distances(T: int) -> None:
    K, H = 6, 2
    meta = make_meta([0, 3, 9, 20], T)
    gapped_steps = meta.timesteps.clone()
    gapped_steps[0, 6:] += 2  # the episode from step 3 skips two steps: its offsets are no longer distances
    streams = TokenMeta(th.cat([meta.timesteps, meta.timesteps]), *(th.cat([m, m]) for m in meta[1:]))
    gapped = TokenMeta(th.cat([meta.timesteps, gapped_steps]), *streams[1:])
    bias = th.randn(H, 2 * K - 1)
    for tokens, rows in [(streams, 1), (gapped, 2)]:
        band = Band(tokens, K, causal=th.tensor([True, False]))
        assert band.offsets.shape[0] == rows
        q_ts = band.queries(tokens.timesteps[:, None, :, None])[:, 0, ..., 0]  # (B, nC, C)
        k_ts = band.windows(tokens.timesteps[:, None, :, None])[:, 0, ..., 0]  # (B, nC, W)
        delta = (q_ts[..., :, None] - k_ts[..., None, :]).clamp(1 - K, K - 1) + K - 1
        expected = bias[:, delta].transpose(0, 1)  # (B, H, nC, C, W): the offset ts_i - ts_j of each key
        allowed = band.allowed[:, None].expand_as(expected)
        assert th.equal(band.scores_mask(bias)[allowed], expected[allowed])
        assert band.select(th.tensor([1])).scores_mask(bias).shape[0] == 1


@pytest.mark.parametrize("local_window", [None, 3])
def test_first_step_out_of_place_is_looked_up_apart_only_with_a_local_window(local_window: int | None) -> None:
    # A local window's context: the first step, a gap, then the last steps. Only a local window uses the shared
    # table plus each query's offset to its first step; without one the per-row table stays (so runs without a local
    # window repeat earlier releases' floating point exactly).
    K, H = 8, 2
    steps = th.tensor([[0, 3, 4, 5, 6], [0, 3, 4, 5, 6]])
    meta = TokenMeta(steps, th.zeros_like(steps), th.ones_like(steps, dtype=th.bool))
    band = Band(meta, K, local_window=local_window)
    assert (band.start_offsets is not None) == (local_window is not None)
    assert band.offsets.shape[0] == (1 if local_window is not None else 2)
    bias = th.randn(H, 2 * K - 1)
    delta = (meta.timesteps[0, :, None] - meta.timesteps[0, None, :]).clamp(1 - K, K - 1) + K - 1
    expected = bias[:, delta]  # (H, T, T): the offset ts_i - ts_j of each key
    allowed = band.allowed[0, 0][None].expand_as(expected)
    assert th.equal(band.scores_mask(bias)[0, :, 0][allowed], expected[allowed])


def test_receptive_field_and_padding() -> None:
    model = EpisodeTransformer(8, n_layers=3, n_heads=2, context_len=5, dropout=0.0)
    assert model.receptive_field == 12
    meta = make_meta([0], 6)
    meta = TokenMeta(meta.timesteps, meta.episode_ids, th.tensor([[True] * 4 + [False] * 2]))
    out = model(th.randn(1, 6, 8), Band(meta, 5))
    assert th.isfinite(out).all()


def test_sinusoidal_positions() -> None:
    pos = SinusoidalPositions(7)
    out = pos(th.tensor([0, 1, 1000]))
    assert out.shape == (3, 7)
    assert th.allclose(out[0, :3], th.zeros(3)) and th.allclose(out[0, 3:6], th.ones(3))
    assert not th.allclose(out[1], out[2])


def test_incremental_steps_equal_the_batched_pass() -> None:
    K, T, D = 5, 30, 16
    model = random_transformer(D, 3, K)
    meta = make_meta([0, 11, 12], T)  # includes a one-step episode
    x = th.randn(1, T, D)
    batched = model(x, Band(meta, K))
    H, d = 2, D // 2
    cache = KVCache(th.zeros(3, 1, H, K - 1, d), th.zeros(3, 1, H, K - 1, d), th.zeros(1, K - 1, dtype=th.bool))
    starts = meta.timesteps[0] == 0
    with th.no_grad():
        for t in range(T):
            out, cache = model.step(x[:, t], cache.reset(starts[t : t + 1]), meta.timesteps[:, t])
            assert th.allclose(out[0], batched[0, t], atol=1e-5), t
    # A cache built by a batched pass over the first 20 steps continues exactly like the batched pass.
    head = TokenMeta(*(m[:, :20] for m in meta))
    _, keys, values = model.forward_with_keys(x[:, :20], Band(head, K))
    cache = KVCache.from_stream(keys, values, head, K)
    with th.no_grad():
        for t in range(20, T):
            out, cache = model.step(x[:, t], cache.reset(starts[t : t + 1]), meta.timesteps[:, t])
            assert th.allclose(out[0], batched[0, t], atol=1e-5), t


@pytest.mark.parametrize("T", [3, 25])  # dense window, then chunks
def test_a_batched_pass_from_a_cache_equals_incremental_steps(T: int) -> None:
    # RLlib's training sequences: the state at a sequence's first step is the cache, the rest runs batched.
    K, D, L, P = 5, 16, 2, 6
    model = random_transformer(D, L, K)
    x = th.randn(2, P + T, D)
    cache = KVCache(th.zeros(L, 2, 2, K - 1, D // 2), th.zeros(L, 2, 2, K - 1, D // 2), th.zeros(2, K - 1, dtype=th.bool))
    outputs = []
    with th.no_grad():
        for t in range(P + T):
            out, cache = model.step(x[:, t], cache, th.full((2,), t))
            outputs.append(out)
            if t == P - 1:
                start = cache
        columns = th.arange(K - 1 + T)
        meta = TokenMeta(
            (P - (K - 1) + columns).expand(2, -1),
            th.zeros(2, K - 1 + T, dtype=th.long),
            th.cat([start.valid, th.ones(2, T, dtype=th.bool)], 1),
        )
        batched, keys, values = model.forward_from_cache(x[:, P:], Band(meta, K), start)
    assert th.allclose(batched, th.stack(outputs[P:], 1), atol=1e-5)
    assert th.allclose(keys[..., -(K - 1) :, :], cache.keys, atol=1e-5)
    assert th.allclose(values[..., -(K - 1) :, :], cache.values, atol=1e-5)


@pytest.mark.parametrize("T", [9, 40])  # dense window, then chunks
def test_attention_weights_rows_are_causal_windows_within_episodes(T: int) -> None:
    K = 4
    model = random_transformer(16, 2, K)
    meta = make_meta([0, 7], T)
    x = th.randn(1, T, 16)
    weights = model.attention_weights(x, Band(meta, K))
    assert len(weights) == 2 and weights[0].shape == (1, 2, T, T)
    allowed = dense_allowed(meta, K, causal=True)
    for w in weights:
        assert th.allclose(w.sum(-1), th.ones(1, 2, T), atol=1e-5)  # each row is a distribution ...
        assert (w[..., ~allowed] == 0).all()  # ... over its own episode's window only
    # The weights are those of the fused path: attending with them reproduces the first layer's output.
    block = model.blocks[0]
    h = block.ln_1(x)
    v = block.attn.qkv(h)[..., 32:].view(1, T, 2, 8).transpose(1, 2)  # (B, H, T, d)
    y = block.attn.proj((weights[0] @ v).transpose(1, 2).reshape(1, T, 16))
    assert th.allclose(y, block.attn(h, Band(meta, K))[0], atol=1e-5)
