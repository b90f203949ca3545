"""Training curves from metrics.jsonl, drawn with matplotlib into curves.png."""
from __future__ import annotations

import io
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


def read_metrics(run_dir: Path) -> list:
    """The records of a run's metrics.jsonl, or a one-line error naming the folder."""
    from nlptoolkit.errors import NlptkError

    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise NlptkError(f"{path} does not exist; give run folders written by `nlptk run` (it appears at the first evaluation)")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise NlptkError(f"{path}:{number}: not a JSON line; the file is damaged") from None
        if isinstance(record, dict) and isinstance(record.get("step"), int):
            records.append(record)
    if not records:
        raise NlptkError(f"{path} has no evaluations yet; plot it after the first one")
    return records


def series(records: list, metric: str) -> dict:
    """label -> (steps, values) for one metric: validation M (and the training loss beside `loss`), or a training scalar."""
    found = {}
    validation = [(r["step"], r["validation"][metric]) for r in records if metric in r.get("validation", {})]
    if validation:
        found[f"validation {metric}"] = validation
    key = "train_loss" if metric == "loss" else metric
    training = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
    if training:
        found["train loss" if metric == "loss" else metric] = training
    return found


def plot_runs(run_dirs: list, metrics: list, out: Path, log_scale: bool = False) -> dict:
    """Curves of several runs overlaid, one panel per metric, each run labelled by its folder name.

    Returns the legend of each panel: {metric: [label, ...]}.
    """
    from nlptoolkit.errors import NlptkError

    runs = [(Path(d), read_metrics(Path(d))) for d in run_dirs]
    names = [d.name for d, _ in runs]
    labels = [str(d) if names.count(d.name) > 1 else d.name for d, _ in runs]
    for metric in metrics:
        for (folder, records), label in zip(runs, labels):
            if not series(records, metric):
                available = sorted({*records[-1].get("validation", {})} | {k for k, v in records[-1].items() if isinstance(v, (int, float)) and k not in ("step", "epoch")})
                raise NlptkError(f"--metric {metric}: run {folder} has no such metric; it has {', '.join(available)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nlptoolkit.checkpoint import atomic_write_bytes

    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    legends: dict = {}
    for ax, metric in zip(axes[0], metrics):
        for i, ((folder, records), label) in enumerate(zip(runs, labels)):
            for kind, points in series(records, metric).items():
                steps, values = zip(*points)
                training = not kind.startswith("validation")
                ax.plot(steps, values, color=colours[i % len(colours)], linestyle=":" if training and metric == "loss" else "-",
                        marker="" if training and metric == "loss" else "o", markersize=3, label=f"{label}: {kind}")
                legends.setdefault(metric, []).append(f"{label}: {kind}")
        ax.set_xlabel("step")
        ax.set_title(metric)
        if log_scale:
            ax.set_yscale("log")
        elif metric == "clipped_fraction":  # a share of steps: always on the full 0..100% scale
            from matplotlib.ticker import PercentFormatter

            ax.set_ylim(-0.02, 1.02)
            ax.yaxis.set_major_formatter(PercentFormatter(1.0))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(Path(out), buffer.getvalue())
    return legends
