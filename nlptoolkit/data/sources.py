"""Load examples through HF ``datasets``: a hub name, local files, or a saved folder.

Whatever the source, the result is a ``DatasetDict`` with ``train`` and
``validation`` splits (and ``test`` if given). When no validation split is
given, a seeded one is carved from train.
"""
from __future__ import annotations

import codecs
import gzip
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

from nlptoolkit.bundled import resolve_data_path
from nlptoolkit.data.conll import load_conll
from nlptoolkit.data.selection import map_columns, parse_split, sample_rows, select_splits
from nlptoolkit.errors import NlptkError

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".txt": "text", ".text": "text", ".parquet": "parquet", ".conll": "conll"}


def _quiet_datasets() -> Any:
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    logging.getLogger("datasets").setLevel(logging.ERROR)
    return datasets


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and text.startswith("An error occurred while generating the dataset"):
        text = " ".join(str(cause).split()) or type(cause).__name__  # datasets hides the real reason here
    return (text[:300] + "...") if len(text) > 300 else text


def _open_bytes(path: Path) -> Any:
    """A binary file object; ``.gz`` files are decompressed as they are read."""
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _blank(path: Path) -> bool:
    """True for an empty or whitespace-only file (only small files are read)."""
    size = path.stat().st_size
    if size == 0:
        return True
    with _open_bytes(path) as f:
        return size <= 4096 and not f.read(1_000_000).strip()


def infer_format(paths: Dict[str, str], fmt: Optional[str], key: str = "data.format") -> str:
    if fmt:
        return fmt
    suffixes = {Path(p[:-3] if p.endswith(".gz") else p).suffix.lower() for p in paths.values()}
    formats = {FORMATS.get(s) for s in suffixes}
    if len(formats) == 1 and None not in formats:
        return formats.pop()
    raise NlptkError(f"{key}: cannot tell the file format from {', '.join(sorted(suffixes))}; set `data.format` to csv, json, text, parquet or conll")


def load_files(
    files: Dict[str, Union[str, List[str]]], fmt: Optional[str] = None, key: str = "data.files",
    columns: Optional[Union[List[str], Dict[str, str]]] = None, streaming: bool = False,
) -> Any:
    """Read local files into a DatasetDict: a file or a list of files per split.

    ``columns`` is the recipe's ``data.columns``: a list names a CoNLL file's
    columns; a mapping renames columns to the task's fields (``{text: review_body}``).

    ``bundled:`` paths name files inside the package; ``.gz`` files are read compressed.
    ``streaming``: an IterableDatasetDict whose rows are read as training asks for them.
    """
    datasets = _quiet_datasets()
    lists = {split: [paths] if isinstance(paths, str) else list(paths) for split, paths in files.items()}
    resolved: Dict[str, List[str]] = {}
    for split, paths in lists.items():
        many = len(paths) > 1 or not isinstance(files[split], str)
        if not paths:
            raise NlptkError(f"{key}.{split}: an empty list; give at least one file")
        resolved[split] = []
        for i, path in enumerate(paths):
            where = f"{key}.{split}[{i}]" if many else f"{key}.{split}"
            path = resolve_data_path(str(path), where)
            check_file(path, where, key, split)
            resolved[split].append(path)
    fmt = infer_format({f"{s}{i}": p for s, ps in resolved.items() for i, p in enumerate(ps)}, fmt)
    if fmt == "conll":
        if streaming:
            raise NlptkError("data.streaming: CoNLL files are read whole; turn streaming off, or convert the data to json lines")
        loaded = load_conll(resolved, columns if isinstance(columns, list) else None, key)
        return map_columns(loaded, columns, key) if isinstance(columns, dict) else loaded
    if fmt == "json":
        for split, paths in resolved.items():
            for path in paths:  # a stream is checked at its start only: reading it all is what streaming avoids
                check_json_lines(Path(path), f"{key}.{split}", max_lines=1000 if streaming else None)
    kwargs: Dict[str, Any] = {"keep_linebreaks": True} if fmt == "text" else {}
    try:
        loaded = datasets.load_dataset(fmt, data_files=resolved, streaming=streaming, **kwargs)
    except Exception as exc:  # datasets wraps parser errors in many types
        if len(resolved) == 1:
            names = ", ".join(p for ps in resolved.values() for p in ps)
            raise NlptkError(f"{key}: could not read {names} as {fmt}: {_one_line(exc)}; check the file or set `data.format`") from None
        # Read together, the splits must share one schema: a value of another type in one
        # file (a word among a list of numbers) fails the whole load without naming a row.
        # Read apart, each file gets its own schema and the task's checks name the row.
        parts = {split: load_files({split: files[split]}, fmt, key, columns, streaming)[split] for split in resolved}
        loaded = (datasets.IterableDatasetDict if streaming else datasets.DatasetDict)(parts)
    if not streaming:
        for split, paths in resolved.items():
            if len(loaded[split]) == 0:
                raise NlptkError(f"{key}.{split}: {', '.join(paths)} holds no examples; give a file with at least one row")
    return map_columns(loaded, columns, key) if isinstance(columns, dict) else loaded


def check_file(path: str, where: str, key: str, split: str) -> None:
    """A data file that exists and is not blank, or an error naming the recipe key."""
    if not Path(path).is_file():
        hint = f" (relative paths start from the current folder, {os.getcwd()})" if not os.path.isabs(path) else ""
        if not os.environ.get("NLPTK_DATA"):  # a recipe reading ${NLPTK_DATA:-...} fell back to its default
            hint += "; NLPTK_DATA is not set: set it to the folder that holds the data sets (the recipes read ${NLPTK_DATA}/<set>/<file>)"
        if key.startswith("data."):
            hint += f", or give the file with --set {key}.{split}=PATH"
        raise NlptkError(f"{where}: file {path} does not exist{hint}")
    if _blank(Path(path)):  # datasets fails on these with an empty StopIteration
        raise NlptkError(f"{where}: {path} is empty (no examples); give a file with at least one row")


def check_json_lines(path: Path, key: str, max_lines: Optional[int] = None) -> None:
    """Check a JSON Lines file line by line before pyarrow parses it.

    Each non-blank line must be a JSON object. This names the bad line, and
    it keeps away input that crashes pyarrow's reader outright (a first line of
    ``null`` ends the process with a segmentation fault). A file holding one JSON
    array, or one pretty-printed object, is left to ``datasets`` as before.
    """
    with _open_bytes(path) as f:
        start = f.read(4096).lstrip(codecs.BOM_UTF8).lstrip()
        if start.startswith(b"["):
            return
        f.seek(0)
        for number, raw in enumerate(f, 1):
            if max_lines is not None and number > max_lines:
                return
            if number == 1:
                raw = raw[len(codecs.BOM_UTF8):] if raw.startswith(codecs.BOM_UTF8) else raw
            if not raw.strip():
                continue
            where = f"{key}: {path}, line {number}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise NlptkError(f"{where}: not UTF-8 text (byte {exc.start} of the line); save the file as UTF-8 or fix the line") from None
            try:
                row = json.loads(text)
            except (ValueError, RecursionError) as exc:
                if number == 1 and start.startswith(b"{") and _one_json_document(path):
                    return
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                raise NlptkError(f"{where}: not valid JSON ({reason}); each line must be one JSON object such as {{\"text\": \"...\"}}") from None
            if not isinstance(row, dict):
                raise NlptkError(
                    f"{where}: expected a JSON object such as {{\"text\": \"...\"}}, got {type(row).__name__ if row is not None else 'null'}; "
                    "each line of a .jsonl file is one row"
                )


def _one_json_document(path: Path) -> bool:
    try:
        with _open_bytes(path) as f:
            json.loads(f.read().decode("utf-8-sig"))
        return True
    except (ValueError, RecursionError):
        return False


def load_splits(config: Any, seed: int, shuffle_split: bool = True, log: Optional[Callable[[str], None]] = None) -> Any:
    """Load the recipe's ``data:`` section (a DataConfig): the splits, their columns
    and the training rows it selects (see ``nlptoolkit/data/selection.py``), with a
    validation split carved from train when none is given.

    With ``data.streaming`` the splits are ``IterableDataset``s: nothing is read
    until the task asks for rows.
    """
    streaming = config.streaming
    split_keys = dict(config.split or {})
    loaded, origin = load_source(config, split_keys, streaming)
    if split_keys and config.hub is None:  # the hub cuts its own splits (load_hub)
        loaded = select_splits(loaded, split_keys, origin, streaming)
    if isinstance(config.columns, dict):
        loaded = map_columns(loaded, config.columns, origin)
    if "train" not in loaded:
        raise NlptkError(f"{origin}: no 'train' split (found {', '.join(loaded) or 'none'}); name the training split 'train'")
    loaded["train"] = sample_rows(loaded["train"], config.sample, config.shuffle_seed)
    if streaming:
        if "validation" not in loaded:
            raise NlptkError(
                f"data.streaming: {origin} has no validation split, and a fraction of a stream of unknown length "
                "cannot be carved; give one (data.files.validation), or cut it by rows with data.split, e.g. "
                "{train: 'train[1000:]', validation: 'train[:1000]'}"
            )
        if log is not None:
            log(f"data: streaming {origin} (data.streaming: true); rows are read as training needs them")
        return loaded
    if len(loaded["train"]) == 0:
        raise NlptkError(f"{origin}: the train split holds no examples")
    if "validation" not in loaded:
        if len(loaded["train"]) < 2:
            raise NlptkError(f"{origin}: cannot carve a validation split from a single training example; give a validation file")
        parts = loaded["train"].train_test_split(test_size=config.validation_fraction, seed=seed, shuffle=shuffle_split)
        loaded["train"], loaded["validation"] = parts["train"], parts["test"]
    return loaded


def load_source(config: Any, split_keys: Dict[str, str], streaming: bool) -> Tuple[Any, str]:
    """The data as its source holds it, and the recipe key that names the source."""
    if config.files is not None:
        columns = config.columns if isinstance(config.columns, list) else None
        return load_files(config.files, config.format, columns=columns, streaming=streaming), "data.files"
    if config.disk is not None:
        return load_disk(config.disk, streaming), "data.disk"
    return load_hub(config, split_keys, streaming), "data.hub"


def load_disk(folder: str, streaming: bool) -> Any:
    """A ``save_to_disk`` folder (a Dataset becomes the train split). Its Arrow files are
    memory-mapped; streamed, its rows are also read one batch at a time."""
    datasets = _quiet_datasets()
    if not Path(folder).exists():
        raise NlptkError(f"data.disk: folder {folder} does not exist; give a folder written by `Dataset.save_to_disk`")
    try:
        loaded = datasets.load_from_disk(folder)
    except Exception as exc:
        raise NlptkError(f"data.disk: could not load {folder}: {_one_line(exc)}; it must be a folder written by save_to_disk") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    if streaming:
        return datasets.IterableDatasetDict({name: split.to_iterable_dataset() for name, split in loaded.items()})
    return loaded


def load_hub(config: Any, split_keys: Dict[str, str], streaming: bool) -> Any:
    """``datasets.load_dataset(hub, config, revision=..., split=...)``: each ``data.split``
    expression goes to the hub as it is, so only those rows are fetched. Streamed, the
    whole splits are opened (the hub streams no slices) and cut by row counts here."""
    datasets = _quiet_datasets()

    def fetch(split: Optional[str], key: str) -> Any:
        try:
            return datasets.load_dataset(config.hub, config.config, revision=config.revision, split=split, streaming=streaming)
        except Exception as exc:
            raise NlptkError(
                f"{key}: could not load '{config.hub}'{f' split {split!r}' if split else ''} from the Hugging Face hub "
                f"({_one_line(exc)}); if the hub is unreachable from this machine, download the data elsewhere and use "
                "`data.files` (csv/json/text/parquet) or `data.disk` (a save_to_disk folder) instead"
            ) from None

    if not split_keys:
        return fetch(None, "data.hub")
    if streaming:
        return select_splits(fetch(None, "data.hub"), split_keys, "data.hub", streaming)
    parts = {}
    for name, expression in split_keys.items():
        parse_split(expression, f"data.split.{name}")
        parts[name] = fetch(expression, "data.hub")
    return datasets.DatasetDict(parts)


def check_field(dataset: Any, field: str, split: str, key: str) -> None:
    """An error that names the missing field, the fields there are, and the recipe key to fix."""
    if field not in dataset.column_names:
        raise NlptkError(
            f"{key}: the {split} data has no field '{field}' (fields: {', '.join(dataset.column_names)}); "
            f"set `{key}` to the name of the field to use"
        )


def column(dataset: Any, field: str, split: str, key: str) -> List[Any]:
    """One column as a list (fine for sentence-sized data sets).

    A ``datasets`` column is read lazily; reading it here, at once, is faster
    and lets a value pyarrow cannot turn into Python (an object with two keys
    it sees as the same) become an error that names the field.
    """
    check_field(dataset, field, split, key)
    try:
        return dataset[field][:]  # a datasets Column reads lazily; a slice reads it at once (a list is copied)
    except ValueError as exc:
        raise NlptkError(
            f"{key}: the {split} split's {field!r} values cannot be read ({' '.join(str(exc).split())}); "
            f"check the {field!r} entries of the data file"
        ) from None


def iter_column(dataset: Any, field: str, split: str, key: str, batch_size: int = 10_000) -> Iterator[Any]:
    """One column, row by row, read in batches from the memory-mapped Arrow
    table: a large corpus is never held in memory as Python strings."""
    check_field(dataset, field, split, key)
    for batch in dataset.select_columns([field]).iter(batch_size=batch_size):
        yield from batch[field]
