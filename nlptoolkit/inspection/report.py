"""The HTML report of `nlptk inspect`: the text coloured by units' activations.

As in Karpathy, Johnson and Fei-Fei (2015), each token's background is red
where a unit is positive and blue where it is negative, white near 0. Hidden
states lie in [-1, 1]; an LSTM's cell state is unbounded, so it is shown as
``tanh(c)`` (the part of it the output gate lets through). Hover a token to
see the exact value. The page is one file: no scripts, no fonts, no network.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor

from nlptoolkit.checkpoint import atomic_write_text
from nlptoolkit.inspection.analysis import Inspection, Unit

LEVELS = 20  # colour steps per sign: small classes instead of a style on every token

STATE_NAMES = {"h": "hidden state", "c": "cell state, shown as tanh(c)"}

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 60em; color: #222; line-height: 1.4; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; } h3 { font-size: 1em; margin-bottom: 0.3em; }
pre.heat { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; line-height: 1.45;
           white-space: pre-wrap; word-break: break-all; background: #fff; border: 1px solid #ddd; padding: 0.6em; margin: 0.3em 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.15em 0.8em; text-align: left; border-bottom: 1px solid #eee; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: 0.9em; }
.legend span { display: inline-block; width: 1.2em; height: 1em; vertical-align: middle; }
"""


def colour(value: float) -> str:
    """White at 0, red at +1, blue at -1."""
    v = max(-1.0, min(1.0, value))
    fade = round(255 * (1 - abs(v)))
    return f"rgb(255,{fade},{fade})" if v >= 0 else f"rgb({fade},{fade},255)"


def level_class(value: float) -> str:
    v = max(-1.0, min(1.0, value))
    step = round(abs(v) * LEVELS)
    return f"z{step}" if step == 0 else (f"p{step}" if v > 0 else f"n{step}")


def colour_classes() -> str:
    rules = ["span.z0 { }"]
    for step in range(1, LEVELS + 1):
        rules.append(f"span.p{step} {{ background: {colour(step / LEVELS)}; }}")
        rules.append(f"span.n{step} {{ background: {colour(-step / LEVELS)}; }}")
    return "\n".join(rules)


def heatmap(result: Inspection, values: Tensor) -> str:
    """The text as a <pre>, each token's characters coloured by ``values`` (one per token, in [-1, 1])."""
    text, parts, cursor = result.text, [], 0
    for (span, value) in zip(result.spans, values.tolist()):
        if span is None:
            continue
        start, end = span
        if start > cursor:
            parts.append(html.escape(text[cursor:start]))
        piece = text[start:end]
        shown = html.escape(piece.replace("\n", " ")) + ("\n" if "\n" in piece else "")
        parts.append(f'<span class="{level_class(value)}" title="{value:.2f}">{shown}</span>')
        cursor = end
    last = max((s[1] for s in result.spans if s is not None), default=0)
    return '<pre class="heat">' + "".join(parts) + "</pre>" if last else '<pre class="heat"></pre>'


def shown_values(result: Inspection, unit: Unit) -> Tensor:
    values = result.values(unit)
    return torch.tanh(values) if unit.state == "c" else values


def unit_title(unit: Unit) -> str:
    return f"layer {unit.layer}, {STATE_NAMES[unit.state]}, unit {unit.unit}"


def render(result: Inspection, title: str, details: Sequence[str], probe_docs: Dict[str, str]) -> str:
    """The whole page as a string."""
    out: List[str] = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{STYLE}\n{colour_classes()}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for line in details:
        out.append(f'<p class="note">{html.escape(line)}</p>')
    legend = "".join(f'<span style="background:{colour(v / 5)}"></span>' for v in range(-5, 6))
    out.append(f'<p class="legend note">-1 {legend} +1 &nbsp; (blue negative, red positive; hover a token for its value)</p>')
    if result.units:
        out.append("<h2>Chosen units</h2>")
        for unit in result.units:
            out.append(f"<h3>{html.escape(unit_title(unit))}</h3>")
            out.append(heatmap(result, shown_values(result, unit)))
    if result.ranking or result.skipped:
        out.append("<h2>Units that track each probe</h2>")
        out.append(
            f'<p class="note">{result.units_scanned:,} units scanned (every unit of every layer, '
            f'{"hidden and cell state" if result.cell == "lstm" else "hidden state"}), ranked by |Pearson correlation| '
            f"of the unit's value with the probe over {len(result.tokens):,} tokens.</p>"
        )
    for name, ranked in result.ranking.items():
        out.append(f"<h2>Probe: {html.escape(name)}</h2>")
        if probe_docs.get(name):
            out.append(f'<p class="note">{html.escape(probe_docs[name])}</p>')
        rows = "".join(
            f"<tr><td>{r.unit.layer}</td><td>{r.unit.state}</td><td class=num>{r.unit.unit}</td><td class=num>{r.correlation:+.3f}</td></tr>"
            for r in ranked
        )
        out.append(f"<table><tr><th>layer</th><th>state</th><th>unit</th><th>correlation</th></tr>{rows}</table>")
        probe = result.probes[name]
        scale = float(probe.abs().max()) or 1.0
        out.append(f'<h3>The probe itself (scaled to its largest value, {scale:g})</h3>')
        out.append(heatmap(result, probe / scale))
        for r in ranked:
            out.append(f"<h3>{html.escape(unit_title(r.unit))}: correlation {r.correlation:+.3f}</h3>")
            out.append(heatmap(result, shown_values(result, r.unit)))
    for name, why in result.skipped.items():
        out.append(f'<h2>Probe: {html.escape(name)}</h2><p class="note">Not ranked: the probe is {html.escape(why)}.</p>')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(
    result: Inspection, path: Path, title: str, details: Sequence[str], probes: Optional[Dict[str, Callable]] = None,
) -> None:
    docs = {name: (fn.__doc__ or "").strip().split("\n")[0] for name, fn in (probes or {}).items()}
    atomic_write_text(Path(path), render(result, title, details, docs))
