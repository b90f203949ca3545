"""The frozen stepper against the encoder's own forward pass, which runs nn.LSTM/GRU/RNN."""
import pytest
import torch

from nlptoolkit import RNNEncoder, Stepper
from nlptoolkit import matvec
from nlptoolkit import stepper as stepper_module


def run_steps(step, inputs, state=None):
    outputs = []
    for t in range(inputs.shape[1]):
        out, state = step(inputs[:, t], state)
        outputs.append(out)
    return torch.stack(outputs, 1), state


def assert_states_close(got, want):
    pairs = zip(got, want) if isinstance(want, tuple) else [(got, want)]
    for g, w in pairs:
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("table", [True, False])
def test_stepper_equals_forward_on_tokens(cell, layers, table, monkeypatch):
    """Token inputs, with the first layer's table and without it (a vocabulary too big for one)."""
    if not table:
        monkeypatch.setattr(stepper_module, "MAX_TABLE_BYTES", 0)
    torch.manual_seed(11)
    enc = RNNEncoder(cell, 8, layers, False, vocab_size=13, embedding_dim=6).eval()
    step = Stepper(enc)
    assert (step.layers[0].table is not None) == table
    tokens = torch.randint(1, 13, (4, 7))
    start = enc(torch.randint(1, 13, (4, 3))).state  # continue from a non-zero state
    whole = enc(tokens, state=start)
    outputs, state = run_steps(step, tokens, start)
    torch.testing.assert_close(outputs, whole.outputs, atol=1e-5, rtol=0)
    assert_states_close(state, whole.state)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_stepper_equals_forward_on_vectors(cell):
    """Dense inputs (frames, image features), from the zero state."""
    torch.manual_seed(12)
    enc = RNNEncoder(cell, 5, 2, False, input_size=3).eval()
    x = torch.randn(2, 6, 3)
    whole = enc(x)
    outputs, state = run_steps(Stepper(enc), x)
    torch.testing.assert_close(outputs, whole.outputs, atol=1e-5, rtol=0)
    assert_states_close(state, whole.state)


def test_stepper_snapshots_the_weights():
    """Built once per run: later training does not reach a stepper already built."""
    torch.manual_seed(13)
    enc = RNNEncoder("lstm", 4, 1, False, vocab_size=5, embedding_dim=3).eval()
    step = Stepper(enc)
    before, _ = step(torch.tensor([2]))
    with torch.no_grad():
        for p in enc.parameters():
            p.add_(1.0)
    after, _ = step(torch.tensor([2]))
    torch.testing.assert_close(before, after, atol=0, rtol=0)
    fresh, _ = Stepper(enc)(torch.tensor([2]))
    assert not torch.allclose(before, fresh)


def test_stepper_refuses_bidirectional():
    with pytest.raises(ValueError, match="unidirectional"):
        Stepper(RNNEncoder("lstm", 4, 1, True, input_size=3))


@pytest.mark.parametrize("way", list(matvec.WAYS))
@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("table", [True, False])
def test_every_product_way_gives_the_forward_outputs(way, cell, table, monkeypatch):
    """Whichever way the measurement picks on a user's CPU, the stepper equals forward() (batch 1 and 3)."""
    if matvec.measure(torch.randn(8, 4), ways=[way], timer=lambda *a: 1.0)[way] is None:
        pytest.skip(f"{way} is not available in this torch build or on this CPU")
    if not table:
        monkeypatch.setattr(stepper_module, "MAX_TABLE_BYTES", 0)
    torch.manual_seed(14)
    enc = RNNEncoder(cell, 8, 2, False, vocab_size=13, embedding_dim=6).eval()
    with matvec.forced(way):
        step = Stepper(enc)
    assert {w for layer in step.layers for w in layer.ways} == {way}
    for batch in (1, 3):
        tokens = torch.randint(1, 13, (batch, 5))
        start = enc(torch.randint(1, 13, (batch, 2))).state
        whole = enc(tokens, state=start)
        outputs, state = run_steps(step, tokens, start)
        torch.testing.assert_close(outputs, whole.outputs, atol=1e-5, rtol=0)
        assert_states_close(state, whole.state)
