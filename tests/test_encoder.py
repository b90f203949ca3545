"""RNNEncoder must give exactly packed-sequence results from padded batches.

Checked three ways: against running each sequence alone (no padding at all),
against PyTorch's own packed path (``pack_padded_sequence`` through a
multi-layer ``nn.LSTM/GRU/RNN`` holding the same weights), and on gradients.
"""
from __future__ import annotations

import functools
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nlptoolkit.encoder import RNNEncoder, reverse_within_length

ATOL = 1e-5
CELLS = ["rnn", "lstm", "gru"]
COMBOS = list(itertools.product(CELLS, [1, 2], [False, True]))
COMBO_IDS = [f"{c}-L{n}-{'bi' if b else 'uni'}" for c, n, b in COMBOS]
INPUT, HIDDEN = 5, 7  # odd sizes, so a mixed-up layout cannot pass by accident
TORCH_CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item() if a.numel() else 0.0
    assert diff <= atol, f"max abs diff {diff:.3g} > {atol}"


def make_encoder(cell: str, num_layers: int, bidirectional: bool, seed: int = 0, **kw) -> RNNEncoder:
    torch.manual_seed(seed)
    kw.setdefault("input_size", None if "vocab_size" in kw else INPUT)
    enc = RNNEncoder(cell, HIDDEN, num_layers, bidirectional, dropout=0.0, **kw)
    return enc.eval()


@functools.lru_cache(maxsize=None)
def encoder_and_reference(cell: str, num_layers: int, bidirectional: bool):
    """Our encoder and a torch multi-layer module holding the same weights (built once per combo)."""
    enc = make_encoder(cell, num_layers, bidirectional, seed=1234)
    return enc, reference_from(enc)


def reference_from(enc: RNNEncoder) -> nn.Module:
    """Copy our per-layer, per-direction weights into one multi-layer torch RNN."""
    ref = TORCH_CELLS[enc.cell](
        enc.input_size,
        enc.hidden_size,
        num_layers=enc.num_layers,
        bidirectional=enc.num_directions == 2,
        batch_first=True,
    )
    with torch.no_grad():
        for layer, directions in enumerate(enc.layers):
            for d, rnn in enumerate(directions):
                sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
                w_ih = rnn.weight_ih_l0
                if enc.cell == "lstm":  # drop the padding-indicator column
                    w_ih = w_ih[:, :-1]
                getattr(ref, "weight_ih" + sfx).copy_(w_ih)
                getattr(ref, "weight_hh" + sfx).copy_(rnn.weight_hh_l0)
                getattr(ref, "bias_ih" + sfx).copy_(rnn.bias_ih_l0)
                getattr(ref, "bias_hh" + sfx).copy_(rnn.bias_hh_l0)
    return ref.eval()


def run_packed(ref: nn.Module, x: torch.Tensor, lengths: torch.Tensor):
    """Reference: (outputs padded to T, h_n, c_n or None, final)."""
    T = x.shape[1]
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, state = ref(packed)
    out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)
    h, c = state if isinstance(state, tuple) else (state, None)
    D = 2 if ref.bidirectional else 1
    final = torch.cat(list(h[-D:]), dim=-1)
    return out, h, c, final


def random_batch(lengths, seed: int = 0, features: int = INPUT):
    """Dense batch padded to max(lengths), with large garbage at padded steps."""
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    x = torch.randn(B, T, features, generator=g)
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    pad = torch.arange(T).unsqueeze(0) >= lengths_t.unsqueeze(1)
    x[pad] = 100.0 * torch.randn(int(pad.sum()), features, generator=g)  # padding must not matter
    return x, lengths_t


def split_state(state):
    return state if isinstance(state, tuple) else (state, None)


# --------------------------------------------------------------------------- #
# Batched == each sequence alone
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("cell,num_layers,bidirectional", COMBOS, ids=COMBO_IDS)
def test_batch_matches_each_sequence_alone(cell, num_layers, bidirectional):
    enc = make_encoder(cell, num_layers, bidirectional)
    lengths = [4, 9, 1, 6, 9, 2]  # unsorted, unequal, min 1, max shared by two
    x, lengths_t = random_batch(lengths, seed=3)
    D = 2 if bidirectional else 1
    with torch.no_grad():
        batch = enc(x, lengths_t)
        B, T = x.shape[:2]
        assert batch.outputs.shape == (B, T, D * HIDDEN)
        assert batch.final.shape == (B, D * HIDDEN)
        h, c = split_state(batch.state)
        assert h.shape == (num_layers * D, B, HIDDEN)
        if cell == "lstm":
            assert c.shape == h.shape
        else:
            assert c is None
        for i, n in enumerate(lengths):
            alone = enc(x[i : i + 1, :n])
            close(batch.outputs[i, :n], alone.outputs[0])
            assert torch.all(batch.outputs[i, n:] == 0), "padded outputs must be exactly zero"
            close(batch.final[i], alone.final[0])
            ah, ac = split_state(alone.state)
            close(h[:, i], ah[:, 0])
            if cell == "lstm":
                close(c[:, i], ac[:, 0])
            # final = forward state at the last real token ++ backward state at the first
            close(batch.final[i, :HIDDEN], batch.outputs[i, n - 1, :HIDDEN])
            if bidirectional:
                close(batch.final[i, HIDDEN:], batch.outputs[i, 0, HIDDEN:])
        close(batch.final, torch.cat(list(h[-D:]), dim=-1))


# --------------------------------------------------------------------------- #
# Batched == torch's packed path (property test)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("cell,num_layers,bidirectional", COMBOS, ids=COMBO_IDS)
@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
)
def test_matches_packed_reference(cell, num_layers, bidirectional, lengths, seed):
    enc, ref = encoder_and_reference(cell, num_layers, bidirectional)
    x, lengths_t = random_batch(lengths, seed=seed)
    with torch.no_grad():
        ours = enc(x, lengths_t)
        out, h, c, final = run_packed(ref, x, lengths_t)
    close(ours.outputs, out)
    oh, oc = split_state(ours.state)
    close(oh, h)
    if cell == "lstm":
        close(oc, c)
    close(ours.final, final)


@pytest.mark.parametrize("cell", CELLS)
def test_matches_packed_reference_with_initial_state(cell):
    enc, ref = encoder_and_reference(cell, 2, True)
    x, lengths = random_batch([7, 3, 10, 1], seed=11)
    g = torch.Generator().manual_seed(5)
    h0 = torch.randn(4, 4, HIDDEN, generator=g)
    state = (h0, torch.randn(4, 4, HIDDEN, generator=g)) if cell == "lstm" else h0
    with torch.no_grad():
        ours = enc(x, lengths, state=state)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, ref_state = ref(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    close(ours.outputs, out)
    for a, b in zip(split_state(ours.state), split_state(ref_state)):
        if a is not None:
            close(a, b)


# --------------------------------------------------------------------------- #
# Gradients
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "cell,num_layers,bidirectional",
    [("lstm", 2, True), ("lstm", 1, False), ("gru", 2, True), ("rnn", 2, True)],
)
def test_gradients_match_packed_reference(cell, num_layers, bidirectional):
    enc = make_encoder(cell, num_layers, bidirectional, seed=7)
    ref = reference_from(enc)
    x0, lengths = random_batch([5, 11, 2, 8, 11], seed=9)
    g = torch.Generator().manual_seed(2)
    D = 2 if bidirectional else 1
    w_out = torch.randn(x0.shape[0], x0.shape[1], D * HIDDEN, generator=g)
    w_fin = torch.randn(x0.shape[0], D * HIDDEN, generator=g)
    w_c = torch.randn(num_layers * D, x0.shape[0], HIDDEN, generator=g)

    def loss(outputs, final, c):
        total = (outputs * w_out).sum() + (final * w_fin).sum()
        return total + (c * w_c).sum() if c is not None else total

    x_ours = x0.clone().requires_grad_(True)
    ours = enc(x_ours, lengths)
    loss(ours.outputs, ours.final, split_state(ours.state)[1]).backward()

    x_ref = x0.clone().requires_grad_(True)
    out, _, c, final = run_packed(ref, x_ref, lengths)
    loss(out, final, c).backward()

    real = (torch.arange(x0.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)).unsqueeze(-1)
    close(x_ours.grad, x_ref.grad)
    assert torch.all(x_ours.grad[~real.expand_as(x0)] == 0), "padding must get zero gradient"

    # Parameter gradients agree too, and the fixed padding column gets exactly none.
    for layer, directions in enumerate(enc.layers):
        for d, rnn in enumerate(directions):
            sfx = f"_l{layer}" + ("_reverse" if d == 1 else "")
            g_ih = rnn.weight_ih_l0.grad
            if cell == "lstm":
                assert torch.all(g_ih[:, -1] == 0), "padding-indicator column must get zero gradient"
                g_ih = g_ih[:, :-1]
            close(g_ih, getattr(ref, "weight_ih" + sfx).grad)
            close(rnn.weight_hh_l0.grad, getattr(ref, "weight_hh" + sfx).grad)
            close(rnn.bias_ih_l0.grad, getattr(ref, "bias_ih" + sfx).grad)
            close(rnn.bias_hh_l0.grad, getattr(ref, "bias_hh" + sfx).grad)


def test_padding_column_is_restored_before_each_call():
    """Even if an optimiser (weight decay, say) moves the fixed column, results stay exact."""
    enc = make_encoder("lstm", 2, True, seed=4)
    ref = reference_from(enc)
    with torch.no_grad():
        for directions in enc.layers:
            for rnn in directions:
                rnn.weight_ih_l0[:, -1].normal_()
        x, lengths = random_batch([6, 2, 9], seed=1)
        ours = enc(x, lengths)
        out, h, c, _ = run_packed(ref, x, lengths)
    close(ours.outputs, out)
    close(ours.state[0], h)
    close(ours.state[1], c)


def test_two_forwards_then_one_backward():
    """Encoding two batches with one encoder before a single backward (siamese / pair tasks)."""
    enc = make_encoder("lstm", 1, True)
    x, lengths = random_batch([5, 3], seed=0)
    a = enc(x, lengths)
    b = enc(x, lengths)
    (a.outputs.sum() + b.outputs.sum()).backward()


# --------------------------------------------------------------------------- #
# Token ids, state carry-over, validation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("cell,bidirectional", [("lstm", True), ("gru", False), ("rnn", True)])
def test_token_ids_match_each_sequence_alone(cell, bidirectional):
    enc = make_encoder(cell, 2, bidirectional, vocab_size=20, embedding_dim=6)
    lengths = [3, 8, 1, 5]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 20, (len(lengths), max(lengths)), generator=g)
    lengths_t = torch.tensor(lengths)
    ids[torch.arange(max(lengths)).unsqueeze(0) >= lengths_t.unsqueeze(1)] = 0  # padding id
    with torch.no_grad():
        batch = enc(ids, lengths_t)
        h, c = split_state(batch.state)
        for i, n in enumerate(lengths):
            alone = enc(ids[i : i + 1, :n])
            close(batch.outputs[i, :n], alone.outputs[0])
            assert torch.all(batch.outputs[i, n:] == 0)
            close(batch.final[i], alone.final[0])
            ah, ac = split_state(alone.state)
            close(h[:, i], ah[:, 0])
            if c is not None:
                close(c[:, i], ac[:, 0])
        # Without lengths, ids are taken as all real (full length).
        full = enc(ids[1:2])
        close(full.outputs[0], batch.outputs[1])


@pytest.mark.parametrize("cell,num_layers", list(itertools.product(CELLS, [1, 2])))
def test_state_carries_over_between_chunks(cell, num_layers):
    enc = make_encoder(cell, num_layers, False, seed=3)
    x, _ = random_batch([10, 10, 10], seed=2)
    with torch.no_grad():
        whole = enc(x)
        first = enc(x[:, :6])
        second = enc(x[:, 6:], state=first.state)
        close(torch.cat([first.outputs, second.outputs], dim=1), whole.outputs)
        close(second.final, whole.final)
        for a, b in zip(split_state(second.state), split_state(whole.state)):
            if a is not None:
                close(a, b)

        # The last chunk of a truncated-BPTT run is usually ragged.
        lengths = torch.tensor([4, 1, 3])
        ragged = enc(x[:, 6:], lengths, state=first.state)
        whole_ragged = enc(x, lengths + 6)
        close(ragged.outputs, whole_ragged.outputs[:, 6:])
        close(ragged.final, whole_ragged.final)
        for a, b in zip(split_state(ragged.state), split_state(whole_ragged.state)):
            if a is not None:
                close(a, b)


def test_initial_state_layout():
    for cell in CELLS:
        enc = make_encoder(cell, 2, True)
        zero = enc.initial_state(3)
        x, lengths = random_batch([4, 2, 3], seed=0)
        with torch.no_grad():
            a, b = enc(x, lengths, state=zero), enc(x, lengths)
        close(a.outputs, b.outputs)
        for s in split_state(zero):
            if s is not None:
                assert s.shape == (4, 3, HIDDEN)


@pytest.mark.parametrize("bad", [[0, 3], [3, 5], [-1, 2], [4, 4, 4]])
def test_bad_lengths_raise(bad):
    enc = make_encoder("lstm", 1, True)
    x = torch.randn(2, 4, INPUT)
    with pytest.raises(ValueError):
        enc(x, torch.tensor(bad))


def test_bad_constructor_arguments_raise():
    with pytest.raises(ValueError):
        RNNEncoder("transformer", 8, input_size=4)
    with pytest.raises(ValueError):
        RNNEncoder("lstm", 8)  # neither vocab_size nor input_size
    with pytest.raises(ValueError):
        RNNEncoder("lstm", 8, vocab_size=10, input_size=4)


# --------------------------------------------------------------------------- #
# reverse_within_length
# --------------------------------------------------------------------------- #
def reverse_reference(x: torch.Tensor, lengths) -> torch.Tensor:
    out = x.clone()
    for i, n in enumerate(lengths):
        for t in range(n):
            out[i, t] = x[i, n - 1 - t]
    return out


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 9), min_size=1, max_size=5),
    extra=st.sampled_from([(), (3,), (2, 2)]),
)
def test_reverse_within_length(lengths, extra):
    T = max(lengths)
    x = torch.arange(len(lengths) * T * int(torch.tensor(extra).prod().item() if extra else 1), dtype=torch.float32)
    x = x.view(len(lengths), T, *extra)
    got = reverse_within_length(x, torch.tensor(lengths))
    assert torch.equal(got, reverse_reference(x, lengths))
    # It is its own inverse.
    assert torch.equal(reverse_within_length(got, torch.tensor(lengths)), x)


def test_reverse_within_length_example():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]])
    got = reverse_within_length(x, torch.tensor([3, 2, 4]))
    assert got.tolist() == [[3, 2, 1, 0], [5, 4, 0, 0], [9, 8, 7, 6]]


@pytest.mark.parametrize("pad", [float("-inf"), float("nan")])
def test_non_finite_padding_is_ignored(pad):
    enc, ref = encoder_and_reference("lstm", 1, True)
    x, lengths = random_batch([5, 3, 1], seed=0)
    x[torch.arange(x.shape[1]).unsqueeze(0) >= lengths.unsqueeze(1)] = pad
    with torch.no_grad():
        ours = enc(x, lengths)
        out, h, c, _ = run_packed(ref, x, lengths)
    close(ours.outputs, out)
    close(ours.state[0], h)
    close(ours.state[1], c)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
def test_step_by_step_equals_whole_sequence(cell, layers):
    """step() is forward() one token at a time: the decoder's building block."""
    torch.manual_seed(3)
    enc = RNNEncoder(cell, 7, layers, False, vocab_size=11, embedding_dim=5).eval()
    tokens = torch.randint(1, 11, (3, 6))
    whole = enc(tokens)
    state = None
    with torch.no_grad():
        for t in range(tokens.shape[1]):
            out, state = enc.step(tokens[:, t], state)
            torch.testing.assert_close(out, whole.outputs[:, t], atol=1e-5, rtol=0)
    for got, want in zip(state if cell == "lstm" else (state,), whole.state if cell == "lstm" else (whole.state,)):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_step_refuses_bidirectional():
    enc = RNNEncoder("gru", 4, 1, True, input_size=3)
    with pytest.raises(ValueError, match="unidirectional"):
        enc.step(torch.zeros(2, 3))


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_cell_update_equals_torch_cell_kernels(cell):
    """The written-out cell equations against PyTorch's own single-step kernels."""
    from nlptoolkit.encoder import cell_update

    torch.manual_seed(4)
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[cell]
    B, F_in, H = 3, 5, 6
    x, h, c = torch.randn(B, F_in), torch.randn(B, H), torch.randn(B, H)
    w_ih, w_hh = torch.randn(gates * H, F_in), torch.randn(gates * H, H)
    b_ih, b_hh = torch.randn(gates * H), torch.randn(gates * H)
    from_input, from_state = x @ w_ih.T + b_ih, h @ w_hh.T + b_hh
    got_h, got_c = cell_update(cell, from_input, from_state, h, c if cell == "lstm" else None)
    if cell != "gru":  # the two products may also come already summed (the Stepper's fused weights)
        summed = cell_update(cell, from_input + from_state, None, h, c if cell == "lstm" else None)
        torch.testing.assert_close(summed[0], got_h, atol=0, rtol=0)
    if cell == "lstm":
        want_h, want_c = torch.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
        torch.testing.assert_close(got_c, want_c, atol=1e-6, rtol=0)
    elif cell == "gru":
        want_h, got_c = torch.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh), None
    else:
        want_h = torch.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh)
    torch.testing.assert_close(got_h, want_h, atol=1e-6, rtol=0)
    assert got_c is None or cell == "lstm"


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_step_with_dense_inputs_and_a_given_state(cell):
    """Vector inputs (frame tagging, captioning) and a carried state, against forward()."""
    torch.manual_seed(5)
    enc = RNNEncoder(cell, 6, 2, False, input_size=4).eval()
    x = torch.randn(2, 5, 4)
    start = enc(torch.randn(2, 3, 4)).state  # some non-zero state
    whole = enc(x, state=start)
    state = start
    with torch.no_grad():
        for t in range(x.shape[1]):
            out, state = enc.step(x[:, t], state)
    torch.testing.assert_close(out, whole.outputs[:, -1], atol=1e-5, rtol=0)
