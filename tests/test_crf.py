"""The CRF against brute-force enumeration of every tag sequence, and the character encoder's batching."""
from __future__ import annotations

import itertools

import pytest
import torch

from nlptoolkit import CRF, CharEncoder, RNNEncoder, Vocabulary, char_batch


def brute_force(crf: CRF, emissions: torch.Tensor, length: int):
    """Score every one of K**length tag sequences of one sentence: (log Z, best path, best score)."""
    K = crf.num_tags
    scores = {}
    for path in itertools.product(range(K), repeat=length):
        s = crf.start[path[0]] + crf.end[path[-1]]
        s = s + sum(emissions[t, path[t]] for t in range(length))
        s = s + sum(crf.transitions[path[t - 1], path[t]] for t in range(1, length))
        scores[path] = s
    all_scores = torch.stack(list(scores.values()))
    best = max(scores, key=lambda p: float(scores[p].detach()))
    return torch.logsumexp(all_scores, 0), list(best), scores


def random_case(seed: int, K: int, B: int, T: int):
    g = torch.Generator().manual_seed(seed)
    crf = CRF(K)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 2)
    emissions = torch.randn(B, T, K, generator=g) * 2
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T  # at least one full row
    emissions[torch.arange(T) >= lengths.unsqueeze(1)] = 1e4  # padding must not matter, however large
    return crf, emissions, lengths


@pytest.mark.parametrize("seed,K,B,T", [(0, 2, 4, 5), (1, 3, 5, 4), (2, 4, 3, 4), (3, 5, 6, 3), (4, 3, 4, 1)])
def test_log_partition_score_and_viterbi_match_enumeration(seed, K, B, T):
    crf, emissions, lengths = random_case(seed, K, B, T)
    log_z = crf.log_partition(emissions, lengths).detach()
    paths = crf.decode_lists(emissions, lengths)
    g = torch.Generator().manual_seed(seed + 100)
    for b in range(B):
        n = int(lengths[b])
        expected_z, expected_path, scores = brute_force(crf, emissions[b], n)
        assert float(log_z[b]) == pytest.approx(float(expected_z.detach()), abs=1e-4)
        assert paths[b] == expected_path
        # the score of any sequence, with arbitrary tags at the padded positions
        tags = torch.randint(0, K, (B, T), generator=g)
        got = crf.score(emissions, tags, lengths)[b].detach()
        assert float(got) == pytest.approx(float(scores[tuple(tags[b, :n].tolist())].detach()), abs=1e-4)
    # decode pads with zeros past each length
    padded = crf.decode(emissions, lengths)
    for b in range(B):
        assert padded[b, int(lengths[b]):].eq(0).all()


def test_nll_is_a_log_probability_and_its_gradient_matches_enumeration():
    crf, emissions, lengths = random_case(7, 3, 3, 4)
    padded = (torch.arange(4) >= lengths.unsqueeze(1)).unsqueeze(-1)
    emissions = emissions.masked_fill(padded, 0.0).requires_grad_(True)
    tags = torch.randint(0, 3, (3, 4), generator=torch.Generator().manual_seed(1))
    nll = crf.nll(emissions, tags, lengths)
    # probabilities of all sequences of sentence 0 sum to 1
    n = int(lengths[0])
    _, _, scores = brute_force(crf, emissions[0].detach(), n)
    log_z = crf.log_partition(emissions, lengths)[0].detach()
    total = sum(torch.exp(s.detach() - log_z) for s in scores.values())
    assert float(total) == pytest.approx(1.0, abs=1e-5)
    assert (nll >= 0).all()
    # gradient against autograd through the brute-force log Z
    nll.sum().backward()
    reference = emissions.detach().clone().requires_grad_(True)
    expected = sum(
        brute_force(crf, reference[b], int(lengths[b]))[0]
        - brute_force(crf, reference[b], int(lengths[b]))[2][tuple(tags[b, : int(lengths[b])].tolist())]
        for b in range(3)
    )
    expected.backward()
    torch.testing.assert_close(emissions.grad, reference.grad, atol=1e-4, rtol=1e-4)


def test_crf_runs_in_float32_under_bf16_autocast():
    crf, emissions, lengths = random_case(3, 4, 3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll = crf.nll(emissions.bfloat16(), torch.zeros(3, 4, dtype=torch.long), lengths)
    assert nll.dtype == torch.float32


def test_char_batch_encodes_each_distinct_word_once_and_matches_one_word_at_a_time():
    sentences = [["The", "cat", "sat", "."], ["the", "cat"], ["Cats", "!", "cat", "The", "zebra"]]
    vocab = Vocabulary.build([w for s in sentences for w in s])
    chars, lengths, index = char_batch(sentences, vocab)
    distinct = ["The", "cat", "sat", ".", "the", "Cats", "!", "zebra"]
    assert chars.shape == (len(distinct), 5) and lengths.tolist() == [len(w) for w in distinct]
    assert index.tolist() == [[1, 2, 3, 4, 0], [5, 2, 0, 0, 0], [6, 7, 2, 1, 8]]

    torch.manual_seed(0)
    encoder = CharEncoder(RNNEncoder(cell="lstm", hidden_size=6, bidirectional=True, vocab_size=len(vocab), embedding_dim=5))
    calls = []
    encoder.encoder.register_forward_hook(lambda *args: calls.append(1))
    features = encoder(chars, lengths, index)
    assert len(calls) == 1  # one call for every word of the batch
    assert features.shape == (3, 5, 12)
    for b, sentence in enumerate(sentences):
        for t, word in enumerate(sentence):
            alone = encoder.encoder(torch.tensor([vocab.encode(word)]), torch.tensor([len(word)])).final[0]
            torch.testing.assert_close(features[b, t], alone, atol=1e-6, rtol=1e-5)
        assert features[b, len(sentence):].eq(0).all()


def test_char_batch_shortens_long_words_to_their_ends():
    vocab = Vocabulary.build(["abcdefghij"])
    chars, lengths, _ = char_batch([["abcdefghij", "abc"]], vocab, max_chars=4)
    assert vocab.decode(chars[0, : lengths[0]].tolist()) == list("abij")
    assert lengths.tolist() == [4, 3]
