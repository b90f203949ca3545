"""The core decoder: bridge, attention (padding masked), teacher forcing, and the frozen fast path."""
from __future__ import annotations

import pytest
import torch

from nlptoolkit import Bridge, EncoderDecoder, RNNDecoder, RNNEncoder

V_SRC, V_TGT = 9, 7


def make_model(attention="general", input_feed=False, bidirectional=True, cell="lstm", dec_cell=None, layers=1, seed=0, hidden=8, eos_bias=0.0):
    torch.manual_seed(seed)
    encoder = RNNEncoder(cell, hidden, layers, bidirectional, vocab_size=V_SRC, embedding_dim=5)
    decoder = RNNDecoder(V_TGT, dec_cell or cell, hidden * (2 if attention == "dot" and bidirectional else 1), layers, 6,
                         attention=attention, memory_size=encoder.output_size, input_feed=input_feed)
    with torch.no_grad():
        decoder.out.weight.mul_(4.0)  # peaked distributions, so that search choices matter
        decoder.out.bias[3] += eos_bias  # <eos> likely enough that outputs end at different lengths
    return EncoderDecoder(encoder, decoder).eval()


def batch(seed=1, B=4, S=6, T=5):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([S, 2, S - 1, 1][:B])
    src = torch.randint(4, V_SRC, (B, S), generator=g)
    src[torch.arange(S)[None] >= lengths[:, None]] = 0
    inputs = torch.cat([torch.full((B, 1), 2), torch.randint(3, V_TGT, (B, T - 1), generator=g)], 1)
    return src, lengths, inputs


def stepwise(model, src, lengths, inputs):
    """The trainable single-step path, one position at a time."""
    memory = model.encode(src, lengths)
    state = model.init_state(memory)
    out, attn = [], []
    for t in range(inputs.shape[1]):
        lp, state, a = model.step(inputs[:, t], state, memory)
        out.append(lp)
        attn.append(a)
    return torch.stack(out, 1), attn


CONFIGS = [
    dict(attention="none"), dict(attention="dot"), dict(attention="general"), dict(attention="additive"),
    dict(attention="general", input_feed=True), dict(attention="additive", cell="gru", layers=2),
    dict(attention="dot", bidirectional=False, cell="rnn"), dict(attention="general", cell="gru", dec_cell="lstm"),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_teacher_forced_forward_equals_single_steps(config):
    model = make_model(**config)
    src, lengths, inputs = batch()
    with torch.no_grad():
        logits, _ = model(src, lengths, inputs)
        steps, _ = stepwise(model, src, lengths, inputs)
    torch.testing.assert_close(logits.log_softmax(-1), steps, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
def test_frozen_fast_path_equals_trainable_step(config):
    model = make_model(**config)
    src, lengths, inputs = batch(seed=3)
    with torch.no_grad():
        slow, slow_attn = stepwise(model, src, lengths, inputs)
    with model.decoder.frozen():
        assert model.decoder._stepper is not None
        fast, fast_attn = stepwise(model, src, lengths, inputs)
    assert model.decoder._stepper is None
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)
    for a, b in zip(fast_attn, slow_attn):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-6))


@pytest.mark.parametrize("attention", ["dot", "general", "additive"])
def test_attention_masks_padding(attention):
    """An example decoded inside a padded batch reads exactly what it reads alone; padding gets weight 0."""
    model = make_model(attention=attention)
    src, lengths, inputs = batch(seed=5)
    with torch.no_grad():
        together, attn = stepwise(model, src, lengths, inputs)
        for i in range(len(lengths)):
            n = int(lengths[i])
            alone, alone_attn = stepwise(model, src[i : i + 1, :n], lengths[i : i + 1], inputs[i : i + 1])
            torch.testing.assert_close(together[i : i + 1], alone, atol=1e-5, rtol=1e-5)
            for a, b in zip(attn, alone_attn):
                assert torch.all(a[i, n:] == 0)
                torch.testing.assert_close(a[i, :n], b[0], atol=1e-6, rtol=1e-5)
                assert float(a[i].sum()) == pytest.approx(1.0, abs=1e-5)
        # garbage in the padded positions changes nothing
        noisy = src.clone()
        noisy[noisy == 0] = 5
        again, _ = stepwise(model, noisy, lengths, inputs)
    torch.testing.assert_close(again, together, atol=1e-5, rtol=1e-5)


def test_attention_none_ignores_the_encoder_outputs_but_not_its_final_state():
    model = make_model(attention="none")
    src, lengths, inputs = batch()
    memory = model.encode(src, lengths)
    assert memory.outputs is None and memory.keys is None
    _, state_a = model.encoder(src, lengths).final, model.init_state(memory)
    other = model.encode(src.flip(1).clamp(min=4), torch.full_like(lengths, src.shape[1]))
    assert not torch.allclose(model.init_state(other).rnn[0], state_a.rnn[0])


def test_bridge_copies_equal_sizes_and_projects_bidirectional_states():
    torch.manual_seed(0)
    h, c = torch.randn(2, 3, 8), torch.randn(2, 3, 8)  # 2 layers, batch 3
    same = Bridge("lstm", 8, 2, 1, "lstm", 8, 2)
    assert not same.project and not list(same.parameters())
    out_h, out_c = same((h, c))
    assert torch.equal(out_h, h) and torch.equal(out_c, c)
    # bidirectional, 1 layer of 8 -> decoder of 5 units: tanh(W [forward; backward] + b)
    bi = Bridge("lstm", 8, 1, 2, "lstm", 5, 1)
    out_h, out_c = bi((h, c))
    expected_h = torch.tanh(torch.cat([h[0], h[1]], -1) @ bi.h.weight.T + bi.h.bias)
    expected_c = torch.tanh(torch.cat([c[0], c[1]], -1) @ bi.c.weight.T + bi.c.bias)
    torch.testing.assert_close(out_h[0], expected_h)
    torch.testing.assert_close(out_c[0], expected_c)
    # a 2-layer encoder into a 1-layer decoder reads the top layer; a GRU gives an LSTM a zero cell
    top = Bridge("gru", 8, 2, 1, "lstm", 8, 1)
    out_h, out_c = top(h)
    assert torch.equal(out_h[0], h[1]) and torch.equal(out_c, torch.zeros_like(out_c))


def test_dot_attention_with_mismatched_sizes_is_a_clear_error():
    with pytest.raises(ValueError, match="'dot' needs the decoder's hidden size"):
        RNNDecoder(V_TGT, hidden_size=8, attention="dot", memory_size=16)


def test_teacher_forcing_zero_feeds_the_models_own_predictions():
    model = make_model(attention="general")
    src, lengths, inputs = batch()
    with torch.no_grad():
        logits, _ = model(src, lengths, inputs, teacher_forcing=0.0)
        memory = model.encode(src, lengths)
        state, prev, expected = model.init_state(memory), inputs[:, 0], []
        for _ in range(inputs.shape[1]):
            lp, state, _ = model.step(prev, state, memory)
            expected.append(lp)
            prev = lp.argmax(-1)
    torch.testing.assert_close(logits.log_softmax(-1), torch.stack(expected, 1), atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        forced, _ = model(src, lengths, inputs, teacher_forcing=1.0)
    assert not torch.allclose(forced, logits)
