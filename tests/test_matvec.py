"""Choosing how to multiply at batch 1: the measurement, the checks and the fallbacks, with faked timings."""
from __future__ import annotations

import pytest
import torch

from nlptoolkit import matvec


@pytest.fixture(autouse=True)
def fresh_choices():
    matvec.forget_choices()
    yield
    matvec.forget_choices()


def fake_timer(seconds):
    """A timer that reports ``seconds[name]`` for each way and records which ways it timed."""
    def timer(name, product, x, bias):
        timer.timed.append(name)
        return seconds[name]
    timer.timed = []
    return timer


def weight(out=24, inp=10):
    return torch.randn(out, inp, generator=torch.Generator().manual_seed(3))


def available_ways():
    """The ways that work on this machine and torch build (the check in ``measure``)."""
    return [name for name, t in matvec.measure(weight(), timer=lambda *a: 1.0).items() if t is not None]


@pytest.mark.parametrize("name", list(matvec.WAYS))
def test_every_way_computes_the_product_at_batch_1_and_4(name):
    if name not in available_ways():
        pytest.skip(f"{name} is not available in this torch build or on this CPU")
    w = weight()
    product = matvec.WAYS[name](w)
    for batch in (1, 4):
        x = torch.randn(batch, w.shape[1])
        for bias in (torch.randn(w.shape[0]), torch.randn(batch, w.shape[0])):  # a vector, or a table's rows
            want = (bias.double() + x.double() @ w.double().t()).float()
            torch.testing.assert_close(product(x, bias), want, atol=1e-5, rtol=0)


def test_the_fastest_working_way_is_chosen():
    seconds = {name: 1.0 for name in matvec.WAYS}
    fastest = available_ways()[-1]
    seconds[fastest] = 0.5
    name, product = matvec.pick_product(weight(), timer=fake_timer(seconds))
    assert name == fastest


def test_a_way_that_fails_or_is_wrong_is_never_chosen(monkeypatch):
    """Faked capabilities: one way's op is missing from this build, another gives a wrong answer."""
    def missing(w):
        raise RuntimeError("could not create a primitive descriptor")  # what a missing ISA looks like

    monkeypatch.setitem(matvec.WAYS, "missing op", missing)
    monkeypatch.setitem(matvec.WAYS, "off by 1e-3", lambda w: (lambda x, b: torch.addmm(b, x, w.t()) + 1e-3))
    seconds = {name: 1.0 for name in matvec.WAYS}
    seconds.update({"missing op": 0.1, "off by 1e-3": 0.1, matvec.DEFAULT: 0.9})
    timer = fake_timer(seconds)
    timings = matvec.measure(weight(), timer=timer)
    assert timings["missing op"] is None and timings["off by 1e-3"] is None
    assert "missing op" not in timer.timed and "off by 1e-3" not in timer.timed
    assert matvec.pick_product(weight(), timer=timer)[0] == matvec.DEFAULT


def test_when_nothing_else_works_the_default_is_used(monkeypatch):
    def broken(w):
        raise RuntimeError("no such op")

    for name in list(matvec.WAYS):
        monkeypatch.setitem(matvec.WAYS, name, broken if name != matvec.DEFAULT else matvec.WAYS[name])
    monkeypatch.setitem(matvec.WAYS, matvec.DEFAULT, lambda w: (lambda x, b: torch.addmm(b, x, w.t()) + 1.0))  # even it is wrong
    name, product = matvec.pick_product(weight(), timer=fake_timer({}))
    assert name == matvec.DEFAULT


def test_the_choice_is_measured_once_per_shape_and_thread_count():
    timer = fake_timer({name: 1.0 for name in matvec.WAYS})
    matvec.pick_product(weight(), timer=timer)
    measured = len(timer.timed)
    assert measured >= 1
    matvec.pick_product(weight(), timer=timer)  # same shape: cached
    assert len(timer.timed) == measured
    matvec.pick_product(weight(out=12), timer=timer)  # a new shape is measured
    assert len(timer.timed) == 2 * measured


def test_off_the_cpu_the_default_is_used_without_measuring():
    timer = fake_timer({})
    name, _ = matvec.pick_product(torch.empty(8, 4, device="meta"), timer=timer)
    assert name == matvec.DEFAULT and timer.timed == []


def test_forced_way_skips_the_measurement_and_ends_with_the_block():
    timer = fake_timer({})
    with matvec.forced("addmm, weights (out, in)"):
        assert matvec.pick_product(weight(), timer=timer)[0] == "addmm, weights (out, in)"
    assert timer.timed == []
    with pytest.raises(ValueError, match="unknown way"):
        with matvec.forced("no such way"):
            pass
