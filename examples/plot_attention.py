"""Draw where a seq2seq model looks: the attention weights of one input as a PNG heatmap.

    python examples/plot_attention.py runs/translate "In the beginning God created the heaven and the earth." attention.png
    python examples/plot_attention.py runs/g2p "thoughtful" g2p_attention.png

Greedy decoding; rows are the output tokens (ending with <eos>), columns the
source tokens. A model trained with `attention: none` has no weights to draw.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nlptoolkit
from nlptoolkit.plots import plot_attention


def main() -> None:
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    run_dir, text, out = sys.argv[1:]
    run = nlptoolkit.load(run_dir)
    source, output, weights = run.task.attention_of(run.model, text)
    plot_attention(source, output, weights.tolist(), Path(out), title=f"{run.recipe.name}: {text[:80]}")
    print(f"wrote {out}: {len(output)} output x {len(source)} source tokens")


if __name__ == "__main__":
    main()
