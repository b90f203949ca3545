"""`nlptk init TASK`: a commented starter recipe, written from the schema itself.

Every key comes from the recipe's dataclasses (``nlptoolkit/recipe.py``) and
the task's ``Options``; each default is the field's default, and each comment
is the comment written beside (or just above) the field in the source, plus
what values it takes. So the starter cannot drift from what ``nlptk run``
accepts: add a field with a comment and it appears here.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import textwrap
import tokenize
import typing
from typing import Any, Dict, List, Literal, Optional, Tuple, Union, get_args, get_origin, get_type_hints

import yaml

COMMENT_COLUMN = 40
PLACEHOLDER_FILES = {"train": "path/to/train.jsonl", "validation": "path/to/validation.jsonl"}


def field_comments(cls: type) -> Dict[str, str]:
    """The comment beside each field of a dataclass (or the comment lines just above it)."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # defined in an interactive session, say
        return {}
    comments: Dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    found: Dict[str, str] = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        text = comments.get(node.end_lineno or node.lineno)
        if text is None:  # a block of comment lines right above the field
            above, line = [], node.lineno - 1
            while line in comments and lines[line - 1].lstrip().startswith("#"):
                above.insert(0, comments[line])
                line -= 1
            text = " ".join(above) or None
        if text:
            found[node.target.id] = text
    return found


def values_text(tp: Any, meta: typing.Mapping) -> str:
    """What a field accepts, in a few words: ``auto | cpu | cuda``, ``integer >= 1``."""
    origin = get_origin(tp)
    optional = ""
    if origin is Union:
        inner = [a for a in get_args(tp) if a is not type(None)]
        tp, origin, optional = inner[0], get_origin(inner[0]), " or null"
    if origin is Literal:
        text = " | ".join(str(a) for a in get_args(tp))
    else:
        text = {int: "integer", float: "number", str: "string", bool: "true | false"}.get(tp, "")
        if origin in (list, typing.List):
            text = "list"
        elif origin in (dict, typing.Dict):
            text = "mapping"
        low, high = meta.get("min"), meta.get("max")
        if low is not None and high is not None:
            text += f" in [{low}, {high}]"
        elif low is not None:
            text += f" >= {low}"
    return (text + optional).strip()


def scalar(value: Any) -> str:
    """A value as YAML on one line."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...").removesuffix("...").strip()


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def section_lines(cls: type, indent: int, prefix: str = "", values: Optional[Dict[str, Any]] = None,
                  notes: Optional[Dict[str, str]] = None, skip: Tuple[str, ...] = ()) -> List[str]:
    """One commented line per field of ``cls``; nested dataclasses become indented sections.

    ``values`` and ``notes`` (by dotted key) replace a default and add to a comment."""
    values, notes = values or {}, notes or {}
    hints = get_type_hints(cls)
    docs = field_comments(cls)
    out: List[str] = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        tp, pad, key = hints[f.name], "  " * indent, prefix + f.name
        about = join_notes(docs.get(f.name), notes.get(key))
        if dataclasses.is_dataclass(tp):
            out.append(comment(f"{pad}{f.name}:", about or first_line(tp.__doc__)))
            out += section_lines(tp, indent + 1, key + ".", values, notes)
            continue
        value = values.get(key, default_of(f))
        about = join_notes(values_text(tp, f.metadata), about)
        if isinstance(value, dict) and value:
            out.append(comment(f"{pad}{f.name}:", about))
            out += [f"{pad}  {k}: {scalar(v)}" for k, v in value.items()]
        else:
            shown = "REQUIRED" if value is dataclasses.MISSING else scalar(value)
            out.append(comment(f"{pad}{f.name}: {shown}", about))
    return out


def first_line(doc: Optional[str]) -> str:
    return (doc or "").strip().split("\n")[0].replace("``", "`")


def join_notes(*parts: Optional[str]) -> str:
    return "; ".join(x for x in parts if x)


def comment(line: str, text: str) -> str:
    return f"{line:<{COMMENT_COLUMN - 2}}  # {text}" if text else line


def starter_recipe(task_cls: type) -> str:
    """The text of a starter recipe for a task class: every key, its default, what it does."""
    from nlptoolkit.recipe import Recipe

    name = task_cls.name
    description = getattr(task_cls, "description", "") or first_line(task_cls.__doc__)
    metrics = ", ".join(getattr(task_cls, "metrics", ()))
    head = [
        f"# Starter recipe for task '{name}'" + (f": {description}" if description else ""),
        f"# Written by `nlptk init {name}` from the recipe schema and the task's Options: every key with",
        "# its default and what it does. Point data.files at your data, delete what you leave as it is,",
        "# then check it with `nlptk validate my.yaml` and train with `nlptk run my.yaml`.",
        comment(f"name: {name}", "the run folder is runs/<name>"),
        comment("task:", "the task and its own options (`nlptk list` shows the tasks)"),
        f"  name: {name}",
    ]
    body = section_lines(task_cls.Options, 1, "task.")
    body += section_lines(
        Recipe, 0, values={"data.files": PLACEHOLDER_FILES},
        notes={"train.early_stopping.metric": f"one of {metrics}"}, skip=("name", "task", "task_options", "source"),
    )
    return "\n".join(head + body) + "\n"
