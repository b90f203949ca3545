"""Classification metrics, written out so the arithmetic is visible."""
from __future__ import annotations

from typing import Dict, Sequence


def accuracy(predictions: Sequence[int], targets: Sequence[int]) -> float:
    if len(targets) == 0:
        return 0.0
    return sum(int(p == t) for p, t in zip(predictions, targets)) / len(targets)


def macro_f1(predictions: Sequence[int], targets: Sequence[int]) -> float:
    """Unweighted mean of per-class F1 over the classes that occur in targets or predictions.

    This is scikit-learn's ``f1_score(average="macro")``; a class with no true
    positives scores 0.
    """
    classes = sorted(set(targets) | set(predictions))
    if not classes:
        return 0.0
    scores = []
    for c in classes:
        tp = sum(1 for p, t in zip(predictions, targets) if p == c and t == c)
        fp = sum(1 for p, t in zip(predictions, targets) if p == c and t != c)
        fn = sum(1 for p, t in zip(predictions, targets) if p != c and t == c)
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def classification_metrics(loss_sum: float, predictions: Sequence[int], targets: Sequence[int]) -> Dict[str, float]:
    """The metrics every classifier reports: accuracy, macro_f1 and mean loss."""
    n = max(len(targets), 1)
    return {"accuracy": accuracy(predictions, targets), "macro_f1": macro_f1(predictions, targets), "loss": loss_sum / n}
