"""Hold every unit up against every probe: which units track which facts about the text.

The steps of `nlptk inspect`: read the text as the task does (its tokens and
ids), record every layer's states at every token (:mod:`.activations`), turn
each probe's per-character values into one value per token, and rank all
units of all layers (hidden and cell state) by the Pearson correlation of
their activation with the probe over the text.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from nlptoolkit.errors import NlptkError
from nlptoolkit.inspection.activations import find_encoder, trace

Span = Optional[Tuple[int, int]]
StateKey = Tuple[int, str]  # (layer from 1, "h" or "c")


@dataclass(frozen=True)
class Unit:
    layer: int  # from 1, the bottom layer
    state: str  # "h" (hidden) or "c" (an LSTM's cell)
    unit: int  # index into the layer's state vector (backward direction after the forward one)

    def __str__(self) -> str:
        return f"{self.layer}:{self.state}:{self.unit}"


@dataclass
class Ranked:
    unit: Unit
    correlation: float

    def to_dict(self) -> Dict[str, object]:
        return {"layer": self.unit.layer, "state": self.unit.state, "unit": self.unit.unit, "correlation": round(self.correlation, 4)}


@dataclass
class Inspection:
    """Everything the report shows."""

    text: str
    tokens: List[str]
    spans: List[Span]  # each token's characters in ``text`` (None if it has none, e.g. <unk> text)
    states: Dict[StateKey, Tensor]  # (T, units) activations
    cell: str
    probes: Dict[str, Tensor] = field(default_factory=dict)  # name -> (T,) values per token
    ranking: Dict[str, List[Ranked]] = field(default_factory=dict)
    skipped: Dict[str, str] = field(default_factory=dict)  # probe -> why it was not ranked
    units: List[Unit] = field(default_factory=list)  # asked for with --units
    truncated_from: Optional[int] = None  # tokens in the whole text, when only the first ones were read

    @property
    def units_scanned(self) -> int:
        return sum(values.shape[1] for values in self.states.values())

    def values(self, unit: Unit) -> Tensor:
        return self.states[(unit.layer, unit.state)][:, unit.unit]

    def ranking_json(self) -> Dict[str, object]:
        return {
            "probes": {name: [r.to_dict() for r in ranked] for name, ranked in self.ranking.items()},
            "units_scanned": self.units_scanned,
            "tokens": len(self.tokens),
            "skipped": self.skipped,
        }


# ----------------------------------------------------------------------------
# Tokens and characters
# ----------------------------------------------------------------------------
def token_spans(text: str, tokens: Sequence[str]) -> List[Span]:
    """Where each token's text is in ``text``, searched left to right.

    Tokenizers may lowercase, mark spaces (sentencepiece's ``▁``) or add
    ``<eos>`` for a line break; a token that cannot be found gets None.
    """
    lowered = text.lower()
    spans: List[Span] = []
    cursor = 0
    for token in tokens:
        piece = "\n" if token == "<eos>" else token.replace("\u2581", " ").lower()
        if piece.strip():
            piece = piece.strip()
        start = lowered.find(piece, cursor) if piece else -1
        if start < 0 or lowered[cursor:start].strip():  # skipping real text: not this token
            spans.append(None)
            continue
        spans.append((start, start + len(piece)))
        cursor = start + len(piece)
    return spans


def per_token(values: Sequence[float], spans: Sequence[Span]) -> Tensor:
    """A probe's per-character values at each token's first character (the previous token's without one)."""
    out, last = [], 0.0
    for span in spans:
        if span is not None and span[0] < len(values):
            last = float(values[span[0]])
        out.append(last)
    return torch.tensor(out, dtype=torch.float64)


# ----------------------------------------------------------------------------
# Correlation
# ----------------------------------------------------------------------------
def correlations(activations: Tensor, probe: Tensor) -> Tensor:
    """Pearson correlation of each column of (T, N) ``activations`` with (T,) ``probe``; 0 for a constant unit."""
    a = activations.double()
    a = a - a.mean(0)
    p = probe.double() - probe.double().mean()
    denominator = a.norm(dim=0) * p.norm()
    r = (a * p.unsqueeze(1)).sum(0) / denominator
    return torch.where(denominator > 0, r, torch.zeros_like(r))


def rank_units(states: Dict[StateKey, Tensor], probe: Tensor, top: int) -> List[Ranked]:
    """The ``top`` units of all layers and states with the largest |correlation|, best first."""
    found: List[Ranked] = []
    for (layer, state), values in states.items():
        r = correlations(values, probe)
        best = r.abs().topk(min(top, r.numel())).indices
        found += [Ranked(Unit(layer, state, int(i)), float(r[i])) for i in best]
    found.sort(key=lambda x: -abs(x.correlation))
    return found[:top]


# ----------------------------------------------------------------------------
# Units named on the command line
# ----------------------------------------------------------------------------
def parse_units(spec: str, states: Dict[StateKey, Tensor], cell: str) -> List[Unit]:
    """``"2:87,1:c:12"`` -> units; LAYER:UNIT is the hidden state, LAYER:c:UNIT an LSTM's cell."""
    units = []
    layers = max(layer for layer, _ in states)
    for item in (s.strip() for s in spec.split(",")):
        match = re.fullmatch(r"(\d+):(?:([hc]):)?(\d+)", item)
        if not match:
            raise NlptkError(f"--units {spec}: '{item}' is not LAYER:UNIT or LAYER:c:UNIT (layers from 1), e.g. --units 2:87,1:c:12")
        layer, state, index = int(match.group(1)), match.group(2) or "h", int(match.group(3))
        if not 1 <= layer <= layers:
            raise NlptkError(f"--units {item}: layer {layer} does not exist; the encoder has layers 1 to {layers}")
        if (layer, state) not in states:
            raise NlptkError(f"--units {item}: a {cell.upper()} has no cell state; use LAYER:UNIT for the hidden state")
        size = states[(layer, state)].shape[1]
        if not 0 <= index < size:
            raise NlptkError(f"--units {item}: unit {index} does not exist; layer {layer} has units 0 to {size - 1}")
        units.append(Unit(layer, state, index))
    return units


# ----------------------------------------------------------------------------
# The whole analysis
# ----------------------------------------------------------------------------
def analyse(
    task: object,
    model: nn.Module,
    text: str,
    probes: Dict[str, Callable[[str], Sequence[float]]],
    units: Optional[str] = None,
    find: bool = True,
    top: int = 3,
    max_tokens: Optional[int] = None,
) -> Inspection:
    """Read ``text`` with a trained model and rank its units against ``probes`` (when ``find``)."""
    tokens, ids = task.read_text(text)  # type: ignore[attr-defined]
    if not ids:
        raise NlptkError("--text: the text has no tokens; give a file with some text in it")
    total = len(ids)
    if max_tokens is not None and total > max_tokens:
        tokens, ids = tokens[:max_tokens], ids[:max_tokens]
    encoder = find_encoder(model)
    result = Inspection(
        text=text, tokens=list(tokens), spans=token_spans(text, tokens), states=trace(encoder, ids), cell=encoder.cell,
        truncated_from=total if total > len(ids) else None,
    )
    if units:
        result.units = parse_units(units, result.states, encoder.cell)
    if find:
        for name, probe in probes.items():
            values = list(probe(text))
            if len(values) != len(text):
                raise NlptkError(f"probe '{name}' gave {len(values)} values for a text of {len(text)} characters; a probe gives one per character")
            per = per_token(values, result.spans)
            result.probes[name] = per
            if float(per.max()) == float(per.min()):
                result.skipped[name] = f"constant ({float(per[0]):g}) on this text"
                continue
            result.ranking[name] = rank_units(result.states, per, top)
    return result
