"""Greedy and beam search against independent expectations: each other, and brute-force enumeration."""
from __future__ import annotations

import contextlib
import itertools

import pytest
import torch

from nlptoolkit import SearchOptions, beam_search, decode, greedy_search
from test_decoder import CONFIGS, V_TGT, batch, make_model

PAD, UNK, BOS, EOS = 0, 1, 2, 3


def sequence_log_probs(model, src, length, sequences):
    """log P(tokens + <eos> | src) for each token list, by teacher forcing: the independent scores."""
    scores = {}
    by_length = {}
    for tokens in sequences:
        by_length.setdefault(len(tokens), []).append(tokens)
    for n, group in by_length.items():
        inputs = torch.tensor([[BOS] + tokens for tokens in group])
        targets = torch.tensor([tokens + [EOS] for tokens in group])
        B = len(group)
        with torch.no_grad():
            logits, _ = model(src[None, :length].expand(B, length), torch.full((B,), length), inputs)
        picked = logits.log_softmax(-1).gather(2, targets.unsqueeze(-1)).squeeze(-1).sum(1)
        scores.update({tuple(tokens): float(lp) for tokens, lp in zip(group, picked)})
    return [scores[tuple(tokens)] for tokens in sequences]


def enumerate_all(model, src, length, options):
    """Every output the options allow, scored and ranked: the brute-force answer."""
    alphabet = [y for y in range(V_TGT) if y not in options.banned and y != EOS]
    allowed = []
    for n in range(options.min_length, options.max_length):
        for tokens in itertools.product(alphabet, repeat=n):
            if not (options.no_repeat_ngram and has_repeated_ngram(list(tokens), options.no_repeat_ngram)):
                allowed.append(list(tokens))
    scored = []
    for tokens, lp in zip(allowed, sequence_log_probs(model, src, length, allowed)):
        n = len(tokens)
        scored.append((lp / (n + 1) ** options.length_penalty if options.length_penalty else lp, lp, tokens))
    return sorted(scored, key=lambda s: -s[0])


def has_repeated_ngram(tokens, n):
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return len(grams) != len(set(grams))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{v}" for v in c.values()))
@pytest.mark.parametrize("frozen", [False, True])
def test_beam_size_one_is_greedy_exactly(config, frozen):
    lengths_seen = set()
    for seed in range(3):
        for eos_bias in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6):  # tiny random models: this spreads the output lengths
            model = make_model(**config, seed=11 + seed, eos_bias=eos_bias)
            src, lengths, _ = batch(seed=seed)
            options = SearchOptions(BOS, EOS, beam_size=1, max_length=12, banned=(PAD, BOS), keep_attention=True)
            with model.decoder.frozen() if frozen else contextlib.nullcontext():
                greedy, beam = greedy_search(model, src, lengths, options), beam_search(model, src, lengths, options)
            assert [h[0].tokens for h in beam] == [h[0].tokens for h in greedy]
            assert [h[0].log_prob for h in beam] == [h[0].log_prob for h in greedy]
            lengths_seen |= {len(h[0].tokens) for h in greedy}
            for g, b in zip(greedy, beam):
                if g[0].attention is not None:
                    assert g[0].attention.shape[0] == len(g[0].tokens) + 1 and torch.equal(g[0].attention, b[0].attention)
    assert len(lengths_seen) >= 3, lengths_seen  # outputs of different lengths: stopping is exercised


def test_frozen_and_trainable_paths_search_the_same():
    model = make_model(attention="additive", input_feed=True, seed=4)
    src, lengths, _ = batch(seed=9)
    options = SearchOptions(BOS, EOS, beam_size=4, nbest=4, max_length=10, banned=(PAD, BOS))
    slow = beam_search(model, src, lengths, options)
    with model.decoder.frozen():
        fast = beam_search(model, src, lengths, options)
    assert [[h.tokens for h in hs] for hs in fast] == [[h.tokens for h in hs] for hs in slow]
    for f, s in zip(fast, slow):
        assert [h.score for h in f] == pytest.approx([h.score for h in s], abs=1e-5)


SEARCHES = [
    dict(),
    dict(length_penalty=1.0),
    dict(min_length=2),
    dict(no_repeat_ngram=2),
    dict(no_repeat_ngram=1, length_penalty=0.6),
]


@pytest.mark.parametrize("extra", SEARCHES, ids=lambda e: "-".join(f"{k}={v}" for k, v in e.items()) or "plain")
@pytest.mark.parametrize("seed", [0, 1])
def test_exhaustive_beam_search_equals_brute_force(extra, seed):
    """With more beams than candidates (at most 16 + 64 a step here) nothing is pruned: the n-best list must be the exact ranking."""
    model = make_model(attention="general", seed=seed)
    src, lengths, _ = batch(seed=seed + 20, B=2)
    options = SearchOptions(BOS, EOS, beam_size=100, nbest=8, max_length=4, banned=(PAD, BOS), **extra)
    found = beam_search(model, src, lengths, options)
    for i in range(2):
        expected = enumerate_all(model, src[i], int(lengths[i]), options)[: options.nbest]
        got = found[i]
        assert [h.tokens for h in got] == [tokens for _, _, tokens in expected]
        assert [h.score for h in got] == pytest.approx([s for s, _, _ in expected], abs=1e-4)
        assert [h.log_prob for h in got] == pytest.approx([lp for _, lp, _ in expected], abs=1e-4)


@pytest.mark.parametrize("seed", range(4))
def test_small_beam_keeps_finished_hypotheses_and_scores_them_right(seed):
    """A pruned search: each hypothesis is a distinct allowed output whose score is its true log-probability,
    and the best one is at least as good as greedy's (beam 3 keeps greedy's path or something better here)."""
    model = make_model(attention="dot", seed=seed)
    src, lengths, _ = batch(seed=seed)
    options = SearchOptions(BOS, EOS, beam_size=3, nbest=3, max_length=6, banned=(PAD, BOS))
    beams = beam_search(model, src, lengths, options)
    greedy = greedy_search(model, src, lengths, options)
    for i, hyps in enumerate(beams):
        assert len(hyps) == 3 and len({tuple(h.tokens) for h in hyps}) == 3
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        for h in hyps:
            assert EOS not in h.tokens and PAD not in h.tokens and BOS not in h.tokens and len(h.tokens) < 6
        true = sequence_log_probs(model, src[i], int(lengths[i]), [h.tokens for h in hyps])
        assert [h.log_prob for h in hyps] == pytest.approx(true, abs=1e-4)
        assert hyps[0].score >= greedy[i][0].score - 1e-5
        exact = enumerate_all(model, src[i], int(lengths[i]), options)[0]
        assert hyps[0].score <= exact[0] + 1e-5


def test_min_and_max_length_hold():
    model = make_model(attention="general", seed=3)
    src, lengths, _ = batch()
    for beam in (1, 3):
        for hyps in decode(model, src, lengths, SearchOptions(BOS, EOS, beam_size=beam, nbest=beam, min_length=3, max_length=5, banned=(PAD, BOS))):
            assert all(3 <= len(h.tokens) <= 4 for h in hyps)


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="nbest"):
        SearchOptions(BOS, EOS, beam_size=2, nbest=3)
    with pytest.raises(ValueError, match="min_length"):
        SearchOptions(BOS, EOS, min_length=5, max_length=5)


@pytest.mark.parametrize("recipe", ["g2p.yaml", "captioning.yaml"])
@pytest.mark.parametrize("setting, message", [
    ("task.beam_size=0", "--set task.beam_size: must be at least 1, got 0"),
    ("task.length_penalty=-1", "--set task.length_penalty: must be at least 0.0, got -1.0"),
    ("task.nbest=3", "task.nbest: at most task.beam_size (1), got 3"),
    ("task.min_length=60", "task.min_length: must be below task.max_length"),
])
def test_every_decoding_task_checks_its_decoding_keys_the_same_way(cli, recipe, setting, message):
    """Seq2seq and captioning share the core's DecodingOptions, so the same mistake gets the same message."""
    from conftest import REPO, one_line_error

    msg = one_line_error(*cli(["validate", f"recipes/{recipe}", "--set", setting], cwd=REPO))
    assert message in msg


def test_decoding_options_become_search_options():
    from nlptoolkit import DecodingOptions

    options = DecodingOptions(beam_size=4, nbest=2, length_penalty=0.6, min_length=1, max_length=30, no_repeat_ngram=2)
    search = options.search_options(BOS, EOS, banned=(PAD,), overrides={"beam_size": 5})
    assert (search.beam_size, search.nbest, search.length_penalty, search.min_length, search.max_length) == (5, 2, 0.6, 1, 30)
    assert search.no_repeat_ngram == 2 and tuple(search.banned) == (PAD,) and search.bos_id == BOS and search.eos_id == EOS
    assert options.search_options(BOS, EOS, overrides={"beam_size": 1}).nbest == 1  # nbest never exceeds the beam
    assert options.search_options(BOS, EOS, max_length=12).max_length == 12  # a tighter per-batch cap wins
    assert options.search_options(BOS, EOS, max_length=99).max_length == 30  # never above the recipe's
    assert options.search_options(BOS, EOS, max_length=0).max_length == 2  # always room for min_length tokens and <eos>


@pytest.mark.parametrize("attention", ["general", "none", "additive"])
def test_finished_examples_leave_the_batch_without_changing_any_result(attention):
    """Examples that are done drop out of the batch: at each step the batch holds the rows of exactly
    the examples that, searched alone, still need that step; and every example's n-best list is
    what searching it alone gives."""
    lengths_seen, shrank = set(), 0
    for seed, eos_bias in itertools.product(range(2), (0.0, 0.4, 0.8, 1.2, 1.6)):
        model = make_model(attention=attention, seed=30 + seed, eos_bias=eos_bias)
        src, lengths, _ = batch(seed=seed)
        options = SearchOptions(BOS, EOS, beam_size=2, nbest=2, max_length=12, banned=(PAD, BOS), keep_attention=attention != "none")
        step, rows = model.step, []
        model.step = lambda prev, state, memory: (rows.append(prev.shape[0]), step(prev, state, memory))[1]
        together = beam_search(model, src, lengths, options)
        steps_alone = []
        for i in range(src.shape[0]):
            rows.clear()
            alone = beam_search(model, src[i : i + 1, : int(lengths[i])], lengths[i : i + 1], options)[0]
            steps_alone.append(len(rows))
            assert [h.tokens for h in together[i]] == [h.tokens for h in alone]
            assert [h.score for h in together[i]] == pytest.approx([h.score for h in alone], abs=1e-5)
            if attention != "none":
                for a, b in zip(together[i], alone):
                    assert torch.allclose(a.attention[:, : int(lengths[i])], b.attention, atol=1e-5)
            lengths_seen.update(len(h.tokens) for h in alone)
        rows.clear()
        beam_search(model, src, lengths, options)
        assert rows == [2 * sum(n > t for n in steps_alone) for t in range(max(steps_alone))]
        shrank += rows[-1] < rows[0]
    assert shrank and len(lengths_seen) > 2  # the cases really end at different times
