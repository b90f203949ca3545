"""What the decoder reads: a first input in place of <bos> (Memory.first_input), zero inputs after
it (token_inputs=False), and a bridge that always projects; checked against the RNN run by hand."""
from __future__ import annotations

import pytest
import torch

from nlptoolkit import Bridge, Memory, RNNDecoder, SearchOptions, beam_search, greedy_search

V, E, H = 7, 5, 8


class FirstInputModel(torch.nn.Module):
    """The smallest model with a first input: src is (B, E) vectors read at the first step."""

    def __init__(self, decoder: RNNDecoder) -> None:
        super().__init__()
        self.decoder = decoder

    def encode(self, src, lengths):
        return Memory(first_input=src)

    def init_state(self, memory):
        return self.decoder.init_state(memory, batch_size=memory.first_input.shape[0])

    def step(self, prev, state, memory):
        return self.decoder.step(prev, state, memory)

    def reorder(self, state, memory, order):
        return self.decoder.reorder(state, memory, order)


def make(cell="lstm", token_inputs=True, input_feed=False, layers=1, seed=0):
    torch.manual_seed(seed)
    decoder = RNNDecoder(V, cell, H, layers, E, attention="none", token_inputs=token_inputs, input_feed=input_feed)
    with torch.no_grad():
        decoder.out.weight.mul_(4.0)
    return decoder.eval()


def data(B=3, T=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    first = torch.randn(B, E, generator=g)
    inputs = torch.cat([torch.full((B, 1), 2), torch.randint(3, V, (B, T - 1), generator=g)], 1)
    return first, inputs


def by_hand(decoder, first, inputs, token_inputs):
    """The RNN over the inputs written out: the first vector, then embeddings (or zeros)."""
    later = decoder.embedding(inputs[:, 1:]) if token_inputs else torch.zeros(inputs.shape[0], inputs.shape[1] - 1, E)
    x = torch.cat([first.unsqueeze(1), later], 1)
    return decoder.out(decoder.rnn(x).outputs).log_softmax(-1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("token_inputs", [True, False])
def test_first_input_replaces_bos_in_every_path(cell, token_inputs):
    decoder = make(cell, token_inputs)
    first, inputs = data()
    memory = Memory(first_input=first)
    with torch.no_grad():
        expected = by_hand(decoder, first, inputs, token_inputs)
        fused, _ = decoder(inputs, decoder.init_state(memory, batch_size=3), memory)
        steps, state = [], decoder.init_state(memory, batch_size=3)
        for t in range(inputs.shape[1]):
            lp, state, _ = decoder.step(inputs[:, t], state, memory)
            assert state.pending is None  # read once
            steps.append(lp)
        with decoder.frozen():
            frozen, state = [], decoder.init_state(memory, batch_size=3)
            for t in range(inputs.shape[1]):
                lp, state, _ = decoder.step(inputs[:, t], state, memory)
                frozen.append(lp)
    torch.testing.assert_close(fused.log_softmax(-1), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(steps, 1), expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.stack(frozen, 1), expected, atol=1e-5, rtol=1e-5)


def test_the_step_by_step_training_path_reads_the_first_input_too():
    decoder = make("lstm", input_feed=True)  # input feeding: the training forward goes step by step
    first, inputs = data()
    memory = Memory(first_input=first)
    with torch.no_grad():
        looped, _ = decoder(inputs, decoder.init_state(memory, batch_size=3), memory)
        state, steps = decoder.init_state(memory, batch_size=3), []
        for t in range(inputs.shape[1]):
            lp, state, _ = decoder.step(inputs[:, t], state, memory)
            steps.append(lp)
        bos_only, _ = decoder(inputs, decoder.init_state(Memory(), batch_size=3), Memory())
    torch.testing.assert_close(looped.log_softmax(-1), torch.stack(steps, 1), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(looped, bos_only)  # the first input changed what it read


def test_zero_inputs_make_the_output_independent_of_the_tokens():
    decoder = make("lstm", token_inputs=False)
    first, inputs = data()
    memory = Memory(first_input=first)
    other = inputs.clone()
    other[:, 1:] = (other[:, 1:] - 3 + 1) % (V - 3) + 3  # every later token different
    with torch.no_grad():
        a, _ = decoder(inputs, decoder.init_state(memory, batch_size=3), memory)
        b, _ = decoder(other, decoder.init_state(memory, batch_size=3), memory)
    torch.testing.assert_close(a, b)
    with torch.no_grad():
        c, _ = make("lstm", token_inputs=True)(inputs, decoder.init_state(memory, batch_size=3), memory)
        d, _ = make("lstm", token_inputs=True)(other, decoder.init_state(memory, batch_size=3), memory)
    assert not torch.allclose(c[:, 1:], d[:, 1:])  # with token inputs they matter


@pytest.mark.parametrize("token_inputs", [True, False])
def test_search_carries_the_first_input_through_beam_reordering(token_inputs):
    model = FirstInputModel(make("gru", token_inputs, seed=3))
    first, _ = data(B=4)
    options = dict(bos_id=2, eos_id=3, max_length=6, banned=(0, 2))
    greedy = greedy_search(model, first, None, SearchOptions(**options))
    beam1 = beam_search(model, first, None, SearchOptions(beam_size=1, **options))
    assert [h[0].tokens for h in greedy] == [h[0].tokens for h in beam1]
    beam = beam_search(model, first, None, SearchOptions(beam_size=3, nbest=3, **options))
    for b, hyps in enumerate(beam):  # each hypothesis' score is its log-probability under the model
        for hyp in hyps:
            tokens = torch.tensor([[2] + hyp.tokens])
            memory = Memory(first_input=first[b : b + 1])
            with torch.no_grad():
                logits, _ = model.decoder(tokens, model.decoder.init_state(memory, batch_size=1), memory)
            lp = logits.log_softmax(-1)[0]
            targets = hyp.tokens + [3]
            assert hyp.log_prob == pytest.approx(sum(float(lp[t, y]) for t, y in enumerate(targets)), abs=1e-4)


def test_bridge_projects_when_told_even_if_the_sizes_match():
    torch.manual_seed(0)
    copy = Bridge("rnn", H, 1, 1, "lstm", H, 2)
    project = Bridge("rnn", H, 1, 1, "lstm", H, 2, project=True)
    s = torch.randn(1, 3, H)
    h, c = copy(s)
    torch.testing.assert_close(h, s.expand(2, 3, H))  # sizes match: copied to both layers
    h, c = project(s)
    torch.testing.assert_close(h, torch.tanh(s @ project.h.weight.T + project.h.bias).expand(2, 3, H))
    assert torch.equal(c, torch.zeros_like(h))  # an RNN "encoder" has no cell state to give
