"""Training curves from metrics.jsonl, drawn with matplotlib into curves.png."""
from __future__ import annotations

import json
from pathlib import Path


def plot_curves(run_dir: Path) -> None:
    """Plot training loss and every validation metric against the step."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlptoolkit.checkpoint import atomic_write_bytes

    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not records:
        return
    names = list(records[-1]["validation"])
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), squeeze=False)
    steps = [r["step"] for r in records]
    for ax, name in zip(axes[0], names):
        ax.plot(steps, [r["validation"].get(name) for r in records], marker="o", label=f"validation {name}")
        if name == "loss":
            train = [(r["step"], r["train_loss"]) for r in records if r.get("train_loss") is not None]
            if train:
                ax.plot(*zip(*train), marker=".", label="train loss")
        ax.set_xlabel("step")
        ax.set_title(name)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(Path(run_dir) / "curves.png", buffer.getvalue())


def plot_attention(source: list, output: list, weights: "object", path: Path, title: str = "") -> None:
    """A source x output heatmap of attention weights ((len(output), len(source)) array) into a PNG.

    Rows are the output tokens as they were written, columns the source
    tokens; a dark cell is where the decoder looked while writing that row.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlptoolkit.checkpoint import atomic_write_bytes

    weights = [[float(x) for x in row] for row in weights]
    width = max(4.0, 0.32 * len(source) + 2.0)
    height = max(3.0, 0.3 * len(output) + 1.5)
    fig, ax = plt.subplots(figsize=(width, height))
    image = ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)))
    ax.set_xticklabels(source, rotation=90, fontsize=8)
    ax.set_yticks(range(len(output)))
    ax.set_yticklabels(output, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    fig.tight_layout()
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
