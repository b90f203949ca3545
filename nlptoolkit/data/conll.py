"""CoNLL column files: one token per line, a blank line between sentences.

This is what most tagging data looks like (CoNLL-2000/2003, WNUT, many
treebank exports)::

    -DOCSTART- -X- -X- O

    EU NNP B-NP B-ORG
    rejects VBZ B-VP O

Columns are split on tabs or spaces. A line of only whitespace ends a
sentence; ``-DOCSTART-`` lines are skipped. Each sentence becomes one row
whose fields are lists, one per column: by default ``tokens`` (the first
column) and ``tags`` (the last); ``data.columns`` names every column instead,
e.g. ``[tokens, pos, chunk, ner]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

from nlptoolkit.errors import NlptkError


def read_conll(path: Path, columns: Optional[Sequence[str]], key: str) -> Dict[str, List[List[str]]]:
    """The sentences of a CoNLL file as columns of lists (the layout of ``Dataset.from_dict``)."""
    if columns and len(set(columns)) != len(columns):
        raise NlptkError(f"data.columns: {list(columns)} names a column twice; give each column its own name")
    picked = {0: "tokens", -1: "tags"} if not columns else dict(enumerate(columns))
    rows: Dict[str, List[List[str]]] = {name: [] for name in picked.values()}
    current: Dict[str, List[str]] = {name: [] for name in picked.values()}
    width: Optional[int] = None

    def close() -> None:
        if current["tokens" if not columns else columns[0]]:
            for name in picked.values():
                rows[name].append(current[name])
                current[name] = []

    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise NlptkError(f"{key}: {path}, line {number}: not UTF-8 text (byte {exc.start} of the line); save the file as UTF-8") from None
            cells = line.split()
            if not cells:
                close()
                continue
            if cells[0] == "-DOCSTART-":
                close()
                continue
            if columns:
                if len(cells) != len(columns):
                    raise NlptkError(
                        f"{key}: {path}, line {number}: {len(cells)} columns, but data.columns names {len(columns)} "
                        f"({', '.join(columns)}); fix the line or data.columns"
                    )
            else:
                if len(cells) < 2:
                    raise NlptkError(f"{key}: {path}, line {number}: one column ({cells[0]!r}); a CoNLL line is a token and its tag, separated by a tab or spaces")
                if width is not None and len(cells) != width:
                    raise NlptkError(f"{key}: {path}, line {number}: {len(cells)} columns, but the lines before have {width}; every line needs the same columns")
                width = len(cells)
            for position, name in picked.items():
                current[name].append(cells[position])
    close()
    return rows


def load_conll(files: Dict[str, List[str]], columns: Optional[Sequence[str]], key: str) -> "object":
    """A DatasetDict with one row per sentence of each split's CoNLL files (several files: one after another)."""
    import datasets

    loaded = {}
    for split, paths in files.items():
        rows: Dict[str, List[List[str]]] = {}
        for i, path in enumerate(paths):
            where = f"{key}.{split}[{i}]" if len(paths) > 1 else f"{key}.{split}"
            part = read_conll(Path(path), columns, where)
            if not next(iter(part.values())):
                raise NlptkError(f"{where}: {path} holds no sentences; a CoNLL file has one token and tag per line")
            for name, values in part.items():
                rows.setdefault(name, []).extend(values)
        loaded[split] = datasets.Dataset.from_dict(rows)
    return datasets.DatasetDict(loaded)
