"""What a task hands to the exporter: modules to trace, and the data to use them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn


@dataclass
class ExportGraph:
    """One exported module, one file: tensors in, tensors out.

    ``module``'s forward takes ``inputs`` positionally and returns ``outputs``
    (one tensor or a tuple, in that order). It is traced once, so it must
    not branch on values; ``RNNEncoder`` already does not while traced.
    ``dynamic`` names the sizes that vary for each input and output, as
    ``torch.onnx.export``'s ``dynamic_axes``: ``{"tokens": {0: "batch", 1: "time"}}``.
    ``example(batch, time)`` makes inputs for ``batch`` sequences at most
    ``time`` long with varying lengths: the exporter traces with one size and
    checks the written file on another.
    """

    name: str  # the file stem: "model", "encoder", "decoder_step"
    module: nn.Module
    inputs: Sequence[str]
    outputs: Sequence[str]
    dynamic: Dict[str, Dict[int, str]]
    example: Callable[[int, int], Tuple[Tensor, ...]]
    doc: str = ""  # one line for the manifest: what the outputs mean and what to do with them


@dataclass
class Exportable:
    """Everything `nlptk export` writes for a run (what ``Task.exportable`` returns).

    vocabularies: each written as NAME.json, the string of every id in order
                  (tokens, labels, tags); the manifest lists them.
    tokenizers:   how text becomes the tokens a vocabulary maps, by name
                  (``nlptoolkit.Tokenizer`` objects): described in the manifest,
                  a sentencepiece model written beside it.
    info:         more manifest fields: labels, special ids, notes on decoding.
    """

    graphs: List[ExportGraph]
    vocabularies: Dict[str, List[str]] = field(default_factory=dict)
    tokenizers: Dict[str, Any] = field(default_factory=dict)
    info: Dict[str, Any] = field(default_factory=dict)


def example_tokens(batch: int, time: int, vocab_size: int, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """Random ids (B, T), 0 at padding, and their lengths (B,): the first row T long, the last
    shorter (when B and T allow), the others 1..T. Ids start at 1: no real token is padding.
    """
    lengths = torch.randint(1, time + 1, (batch,), generator=generator)
    lengths[0] = time
    if batch > 1 and time > 1:
        lengths[-1] = min(int(lengths[-1]), time - 1)
    tokens = torch.randint(1, max(vocab_size, 2), (batch, time), generator=generator)
    tokens = tokens.masked_fill(torch.arange(time).unsqueeze(0) >= lengths.unsqueeze(1), 0)
    return tokens, lengths
