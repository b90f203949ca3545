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
