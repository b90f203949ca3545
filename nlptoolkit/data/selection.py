"""Which rows and columns of the loaded data a recipe trains on.

Applied in this order, to in-memory (``Dataset``) and streamed
(``IterableDataset``) splits alike:

1. ``data.split``: splits made with ``datasets``' own split expressions
   (``train[:90%]``, ``train[90%:]``, ``train[:1000]+validation``);
2. ``data.columns`` as a mapping: rename the data's columns to the fields
   the task reads (``{text: review_body}``: the task's ``text`` is the
   data's ``review_body``);
3. ``data.shuffle_seed`` and ``data.sample``: the training rows are shuffled
   with that seed (only if it is given) and the first ``sample`` are kept;
4. (after the task has encoded them) ``data.min_length`` / ``data.max_length``:
   training examples of other lengths, in the task's own tokens, are dropped.

The filters touch the train split only, so validation and test metrics stay
comparable between recipes that filter differently.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

from nlptoolkit.errors import NlptkError

SHUFFLE_BUFFER = 10_000  # rows a streamed split is shuffled within (datasets' own default is 1,000)


def is_streamed(dataset: Any) -> bool:
    """True for a ``datasets.IterableDataset``: rows are read as they are needed, never all at once."""
    import datasets

    return isinstance(dataset, datasets.IterableDataset)


def column_names(dataset: Any) -> List[str]:
    """The columns of a split; a streamed split whose format does not declare them shows its first row."""
    names = dataset.column_names
    if names is None:  # e.g. a streamed text file: the features are only known once a row is read
        first = next(iter(dataset.take(1)), None)
        names = list(first) if first is not None else []
    return list(names)


# --------------------------------------------------------------------------
# 1. split expressions
# --------------------------------------------------------------------------
def parse_split(expression: str, key: str) -> Any:
    """A ``datasets.ReadInstruction`` for ``train[:90%]``-style text, or an error naming the key."""
    from datasets import ReadInstruction

    try:
        return ReadInstruction.from_spec(expression)
    except (ValueError, AssertionError) as exc:
        raise NlptkError(
            f"{key}: {expression!r} is not a split expression ({' '.join(str(exc).split())}); "
            "write it as datasets does: train, train[:90%], train[90%:], train[:1000], train[:50%]+validation"
        ) from None


def select_splits(loaded: Any, expressions: Dict[str, str], origin: str, streaming: bool) -> Any:
    """New splits cut from the loaded ones by split expressions (``{validation: "train[90%:]"}``)."""
    import datasets

    made = {}
    for name, expression in expressions.items():
        key = f"data.split.{name}"
        instruction = parse_split(expression, key)
        parts = []
        for relative in instruction._relative_instructions:  # datasets' own parse of each `a[x:y]` term
            split = relative.splitname
            if split not in loaded:
                raise NlptkError(f"{key}: {expression!r} reads split '{split}', but {origin} has {', '.join(loaded) or 'none'}")
            source = loaded[split]
            if streaming:
                parts.append(_slice_stream(source, relative, expression, key))
                continue
            (absolute,) = datasets.ReadInstruction(split, from_=relative.from_, to=relative.to, unit=relative.unit,
                                                  rounding=relative.rounding).to_absolute({split: len(source)})
            parts.append(source.select(range(absolute.from_, absolute.to)))
        made[name] = parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)
    return (datasets.IterableDatasetDict if streaming else datasets.DatasetDict)(made)


def _slice_stream(source: Any, relative: Any, expression: str, key: str) -> Any:
    """Rows ``[from_:to]`` of a stream: row counts only, since a stream does not know its length."""
    if relative.unit == "%" and (relative.from_ is not None or relative.to is not None):
        raise NlptkError(
            f"{key}: {expression!r} takes a percentage, which needs the split's length, and a streamed split "
            "(data.streaming: true) does not know it; use row counts, e.g. train[:1000] and train[1000:]"
        )
    start, stop = relative.from_ or 0, relative.to
    if start < 0 or (stop is not None and stop < 0):
        raise NlptkError(f"{key}: {expression!r} counts from the end, which a streamed split cannot do; count from the start")
    if start:
        source = source.skip(start)
    if stop is not None:
        source = source.take(max(0, stop - start))
    return source


# --------------------------------------------------------------------------
# 2. column mapping
# --------------------------------------------------------------------------
def map_columns(loaded: Any, mapping: Dict[str, str], origin: str) -> Any:
    """Rename each split's columns to the fields the task reads: ``{field: column in the data}``.

    A column the mapping names as a field that also exists in the data is
    replaced (``{text: review_body}`` where there is also a ``text`` column).
    """
    seen: Dict[str, str] = {}
    for field, source in mapping.items():
        if source in seen:
            raise NlptkError(f"data.columns.{field}: column '{source}' is already mapped to '{seen[source]}'; map each column once")
        seen[source] = field
    renamed = {}
    for split, dataset in loaded.items():
        names = column_names(dataset)
        for field, source in mapping.items():
            if source not in names:
                raise NlptkError(
                    f"data.columns.{field}: the {split} split of {origin} has no column '{source}' "
                    f"(columns: {', '.join(names) or 'none'}); name one of them"
                )
        renames = {source: field for field, source in mapping.items() if source != field}
        replaced = [name for name in names if name in renames.values() and name not in renames]
        if replaced:
            dataset = dataset.remove_columns(replaced)
        renamed[split] = dataset.rename_columns(renames) if renames else dataset
    return type(loaded)(renamed)


# --------------------------------------------------------------------------
# 3. shuffle and sample the training rows
# --------------------------------------------------------------------------
def sample_rows(train: Any, sample: Optional[int], shuffle_seed: Optional[int]) -> Any:
    """Shuffle with ``shuffle_seed`` (if given; a stream within a buffer), then keep the first ``sample`` rows."""
    if shuffle_seed is not None:
        train = train.shuffle(seed=shuffle_seed, buffer_size=SHUFFLE_BUFFER) if is_streamed(train) else train.shuffle(seed=shuffle_seed)
    if sample is not None:
        if is_streamed(train):
            train = train.take(sample)
        else:
            train = train.select(range(min(sample, len(train))))
    return train


# --------------------------------------------------------------------------
# 4. length filters on encoded examples
# --------------------------------------------------------------------------
def length_filter(min_length: Optional[int], max_length: Optional[int], length: Callable[[Any], int]) -> Optional[Callable[[Any], bool]]:
    """A test for examples ``min_length <= length(example) <= max_length``, or None if neither is set."""
    if min_length is None and max_length is None:
        return None
    low, high = min_length or 0, max_length if max_length is not None else float("inf")
    return lambda example: low <= length(example) <= high


def filter_examples(examples: Any, keep: Callable[[Any], bool], task: str) -> List[Any]:
    """The examples that pass ``keep``; refuses data that is not a list of examples."""
    if not isinstance(examples, (list, tuple)):
        raise NlptkError(
            f"data.min_length / data.max_length: task '{task}' reads its data as one stream, not as separate examples, "
            "so there is no example length to filter by; remove the key"
        )
    return [e for e in examples if keep(e)]
