"""How far back a gradient reaches: the norm of dL/dh_t against the distance from the loss.

Backpropagation through time multiplies one Jacobian per step. For a vanilla
RNN, ``h_t = tanh(W_hh h_{t-1} + W_xh x_t + b)`` and

    dh_t/dh_{t-1} = diag(tanh'(a_t)) W_hh,

so the gradient reaching k steps back is a product of k such matrices: it
shrinks (or grows) geometrically, and a loss at the last step cannot teach
the early steps (Bengio et al. 1994; Pascanu et al. 2013). An LSTM's cell
state is carried by the forget gate, ``c_t = f_t * c_{t-1} + ...``, and a GRU's
state by ``z_t * h_{t-1}``: paths along which the signal is multiplied by
gates, not squashed through a matrix and a tanh at every step.

:func:`gradient_norms` measures it: run the encoder step by step
(:func:`~nlptoolkit.inspection.activations.unroll`), put the loss at the last
step, ``L = u . h_T`` for a fixed random unit vector ``u`` (it stands for
whatever the loss's gradient at the output is), and read ``||dL/dh_t||``,
where ``h_t`` is the hidden state of every layer at step t.
"""
from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import Tensor

from nlptoolkit.checkpoint import atomic_write_bytes, atomic_write_text
from nlptoolkit.encoder import RNNEncoder
from nlptoolkit.inspection.activations import unroll

CELL_NAMES = ("rnn", "lstm", "gru")


def gradient_norms(encoder: RNNEncoder, inputs: Tensor, direction: Optional[Tensor] = None) -> Tensor:
    """(B, T) norms of dL/dh_t per sequence, index 0 being the last step (distance 0), for L = u . h_T.

    ``inputs`` is (B, T) token ids or (B, T, F) vectors; ``direction`` is the
    unit vector u (default: a random one from the current torch seed).
    Runs in eval mode (no dropout); parameters get no gradient.
    """
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.enable_grad():
            run = unroll(encoder, inputs)
            states = [h for layer in run.h for h in layer]
            for h in states:
                h.retain_grad()
            top = run.h[-1][-1]  # (B, D*H): the top layer at the last step
            if direction is None:
                direction = torch.randn(top.shape[-1], device=top.device)
            direction = direction.to(top) / direction.norm()
            (top @ direction).sum().backward(inputs=states)
    finally:
        encoder.train(was_training)
    T = len(run.h[0])
    squared = torch.zeros(inputs.shape[0], T, dtype=torch.float64)
    for layer in run.h:
        for t, h in enumerate(layer):
            if h.grad is not None:
                squared[:, T - 1 - t] += h.grad.double().pow(2).sum(-1).cpu()
    return squared.sqrt()


def typical(norms: Tensor) -> Tensor:
    """Geometric mean over sequences, per distance: the right average for quantities that vary by powers of 10."""
    return norms.clamp_min(1e-300).log().mean(0).exp()


@dataclass
class Curve:
    label: str
    norms: Tensor  # (T,) typical norm per distance

    def fall(self, distance: int) -> float:
        """By how much the norm falls from distance 0 to ``distance``: norm(0) / norm(distance)."""
        if distance >= self.norms.numel():
            return math.nan
        return float(self.norms[0] / self.norms[distance].clamp_min(1e-300))


@dataclass
class GradientStudy:
    curves: List[Curve] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)

    def falls(self, distance: int = 50) -> Dict[str, float]:
        return {c.label: c.fall(distance) for c in self.curves}


def at_initialisation(config: object, steps: int, samples: int, seed: int = 0) -> List[Curve]:
    """The three cells, freshly initialised with the recipe's sizes, reading the same random inputs.

    Inputs are N(0, 1) vectors of ``embedding_dim``: what an untrained
    embedding (``nn.Embedding`` starts at N(0, 1)) makes of any text.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(samples, steps, config.embedding_dim, generator=generator)
    direction = torch.randn(config.hidden_size, generator=generator)
    curves = []
    for cell in CELL_NAMES:
        torch.manual_seed(seed)
        encoder = RNNEncoder(cell, config.hidden_size, config.num_layers, input_size=config.embedding_dim)
        curves.append(Curve(f"{cell} at initialisation", typical(gradient_norms(encoder, inputs, direction))))
    return curves


def write_outputs(study: GradientStudy, folder: Path, title: str, distance: int = 50) -> None:
    """``gradient_norms.csv`` (one column per curve) and ``gradient_norms.png`` (log scale, relative to distance 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["distance"] + [c.label for c in study.curves])
    T = min(c.norms.numel() for c in study.curves)
    for d in range(T):
        writer.writerow([d] + [f"{float(c.norms[d]):.6e}" for c in study.curves])
    atomic_write_text(folder / "gradient_norms.csv", buffer.getvalue())

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {"rnn": "tab:red", "lstm": "tab:blue", "gru": "tab:green"}
    for c in study.curves:
        relative = (c.norms / c.norms[0]).clamp_min(1e-300)
        fall = c.fall(distance)
        shown = f"{c.label} (÷{fall:.2g} over {distance} steps)" if math.isfinite(fall) else c.label
        colour = styles.get(c.label.split()[0], None)
        ax.semilogy(range(relative.numel()), relative.numpy(), label=shown, color=colour,
                    linestyle="--" if "initialisation" in c.label else "-", linewidth=2)
    ax.axvline(distance, color="grey", linewidth=0.8, alpha=0.6)
    ax.set_xlabel("distance back from the loss (steps)")
    ax.set_ylabel("||dL/dh_t|| relative to the last step")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(folder / "gradient_norms.png", png.getvalue())


def trained_inputs(task: object, encoder: RNNEncoder, text: Optional[str], steps: int, samples: int, seed: int) -> Tensor:
    """What a trained encoder reads: windows of ``text`` as the task tokenizes it, or random tokens without one."""
    generator = torch.Generator().manual_seed(seed)
    if encoder.embedding is None:
        return torch.randn(samples, steps, encoder.input_size, generator=generator)
    if text is None:
        return torch.randint(4, encoder.embedding.num_embeddings, (samples, steps), generator=generator)
    _, ids = task.read_text(text)  # type: ignore[attr-defined]
    if len(ids) < steps:
        from nlptoolkit.errors import NlptkError

        raise NlptkError(f"--text: {len(ids)} tokens, fewer than --steps {steps}; give a longer text or fewer steps")
    starts = torch.linspace(0, len(ids) - steps, samples).long().unique()
    data = torch.tensor(ids)
    return torch.stack([data[s : s + steps] for s in starts.tolist()])


def study(source: str, steps: int = 100, samples: int = 16, text: Optional[str] = None, seed: int = 0) -> GradientStudy:
    """What `nlptk gradients` measures: the three cells at initialisation with the recipe's (or run's)
    sizes, and, for a run folder, its own trained encoder."""
    from nlptoolkit.inspection.activations import find_encoder

    result = GradientStudy()
    if Path(source).is_dir():
        from nlptoolkit.runs import load_run

        recipe, task, model = load_run(source)
        encoder = find_encoder(model).cpu()
        inputs = trained_inputs(task, encoder, text, steps, samples, seed)
        torch.manual_seed(seed)
        direction = torch.randn(encoder.output_size)
        trained = Curve(f"{encoder.cell} trained ({Path(source).name})", typical(gradient_norms(encoder, inputs, direction)))
        result.notes.append(
            f"trained encoder read {inputs.shape[0]} windows of {steps} "
            + ("tokens of the given text" if text is not None else "random tokens (give --text for real text)")
        )
    else:
        from nlptoolkit.recipe import load_recipe

        recipe, trained = load_recipe(source), None
    config = recipe.encoder
    result.curves = at_initialisation(config, steps, samples, seed)
    if trained is not None:
        result.curves.append(trained)
    result.notes.insert(0, f"{config.num_layers} layer(s) of {config.hidden_size} units, inputs of {config.embedding_dim}; "
                        f"norms are geometric means over {samples} sequences")
    return result
