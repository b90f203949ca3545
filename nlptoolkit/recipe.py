"""Recipes: the YAML file that says what to train, on what data, and how.

Loading happens in four steps, each with errors that name the file, the
dotted key and the line:

1. ``yaml.safe_load`` (never the unsafe loader), keeping each key's line;
2. ``${VAR}`` / ``${VAR:-default}`` environment interpolation in strings;
3. ``--set key.path=value`` overrides from the command line;
4. validation against the dataclasses below, and the task's own ``Options``.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Sequence, Tuple, Union

import yaml

from nlptoolkit.bundled import find_recipe, recipe_files
from nlptoolkit.config_schema import Locator, at_least, build, to_plain
from nlptoolkit.data.selection import parse_split
from nlptoolkit.errors import NlptkError, did_you_mean


@dataclass
class TokenizerConfig:
    """How text becomes tokens, and which tokens make the vocabulary."""

    kind: Literal["char", "word", "sentencepiece"] = "word"  # char: every character; word: whitespace; sentencepiece: learned subwords
    lowercase: bool = False  # lower-case the text before splitting it
    split_punctuation: bool = False  # word only: "movie." -> "movie", "."
    vocab_size: int = at_least(8, 8000)  # sentencepiece only: how many pieces to learn
    model_type: Literal["unigram", "bpe"] = "unigram"  # sentencepiece only: the algorithm
    min_freq: int = at_least(1, 1)  # tokens seen fewer times in train become <unk>
    max_size: Optional[int] = at_least(1, None)  # keep only the most frequent tokens; null: all


@dataclass
class DataConfig:
    """Where the examples come from (exactly one of ``hub``, ``files`` or ``disk``), and which of them to use."""

    hub: Optional[str] = None  # a Hugging Face hub data set name (needs the network)
    config: Optional[str] = None  # hub only: the data set's configuration
    revision: Optional[str] = None  # hub only: a branch, tag or commit, for repeatable runs
    files: Optional[Dict[str, Union[str, List[str]]]] = None  # split -> local file, or a list of files read one after another (.jsonl, .csv, .txt, .parquet, .conll, or .gz of them); bundled:SET/FILE for the data inside the package
    format: Optional[Literal["csv", "json", "text", "parquet", "conll"]] = None  # null: from the file extension
    disk: Optional[str] = None  # a folder written by datasets' save_to_disk (a Dataset is the train split)
    split: Optional[Dict[str, str]] = None  # split -> a datasets split expression, e.g. {train: "train[:90%]", validation: "train[90%:]"}
    # a mapping renames the data's columns to the fields the task reads, {text: review_body}: the task's
    # `text` is the data's `review_body`; a list names the columns of a CoNLL file (default: tokens first, tags last)
    columns: Optional[Union[Dict[str, str], List[str]]] = None
    validation_fraction: float = at_least(0.0, 0.1, high=0.9)  # carved from train, seeded, when no validation split is given
    sample: Optional[int] = at_least(1, None)  # train on the first N training rows (random N with shuffle_seed); before validation is carved
    shuffle_seed: Optional[int] = at_least(0, None)  # shuffle the training rows with this seed before `sample` (streamed: within a 10,000-row buffer); null: file order
    min_length: Optional[int] = at_least(0, None)  # drop training examples shorter than this, in the task's tokens (what the model reads)
    max_length: Optional[int] = at_least(1, None)  # drop training examples longer than this, in the task's tokens
    streaming: bool = False  # read the data as training needs it (an IterableDataset), never all in memory; needs a task that streams
    vocab_sample: int = at_least(1, 10000)  # streaming only: the first N training rows fit the tokenizer, vocabulary and labels
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)


@dataclass
class EncoderConfig:
    """The shared RNN encoder every task builds on."""

    cell: Literal["rnn", "lstm", "gru"] = "lstm"  # the recurrent cell
    embedding_dim: int = at_least(1, 128, high=65536)  # size of each token's vector
    hidden_size: int = at_least(1, 128, high=65536)  # size of the state, per direction
    num_layers: int = at_least(1, 1, high=64)  # stacked layers
    bidirectional: bool = False  # also read right to left (not for language models)
    dropout: float = at_least(0.0, 0.0, high=1.0)  # on the embeddings and between layers


@dataclass
class EarlyStoppingConfig:
    """Stop when a validation metric has not improved for ``patience`` evaluations."""

    metric: str = "loss"  # the validation metric that picks best.pt
    mode: Literal["auto", "min", "max"] = "auto"  # auto: min for the task's lower-is-better metrics (loss, perplexity, wer, ...), max otherwise
    patience: Optional[int] = at_least(1, None)  # evaluations without improvement before stopping; null: never stop early


@dataclass
class TrainConfig:
    """How the model is optimised, for how long, and when it is evaluated."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"  # the torch.optim optimizer
    lr: float = at_least(0.0, 1e-3, high=1e3)  # learning rate (the peak, with a scheduler)
    weight_decay: float = at_least(0.0, 0.0)  # L2 penalty (decoupled for adamw)
    momentum: float = at_least(0.0, 0.0, high=1.0)  # sgd only
    batch_size: int = at_least(1, 32, high=1_000_000)  # examples (or LM streams) per step, over all processes
    epochs: int = at_least(1, 10, high=1_000_000)  # passes over the training data
    max_steps: Optional[int] = at_least(1, None)  # stop after this many steps, whatever the epochs
    max_minutes: Optional[float] = at_least(0.0, None)  # stop after this much training time
    grad_clip: Optional[float] = at_least(0.0, 5.0)  # clip the gradients' global norm; null: no clipping
    scheduler: Literal["none", "cosine", "plateau"] = "none"  # learning-rate schedule
    warmup_steps: int = at_least(0, 0)  # linear warm-up from 0 to lr
    eval_every: Optional[int] = at_least(1, None)  # steps; null = at the end of every epoch
    bucket: bool = True  # length-bucketed batches: little padding, same randomness
    ema_decay: Optional[float] = at_least(0.0, None, high=0.99999)  # evaluate and save an EMA of the weights (e.g. 0.999); null: the weights as trained
    # bf16: the training forward pass runs under torch.autocast in bfloat16 (weights, optimizer
    # and evaluation stay float32); faster on GPUs and on CPUs with AVX512-BF16 or AMX.
    # auto: bf16 where the hardware does it natively, fp32 elsewhere (see nlptoolkit/precision.py).
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    tensorboard: bool = False  # also log the scalars to run_dir/tensorboard (needs the [tensorboard] extra)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)


@dataclass
class Recipe:
    name: str
    task: str
    data: DataConfig = field(default_factory=DataConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    seed: int = at_least(0, 0)  # seeds data order, initial weights and dropout: same seed, same run
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: cuda when there is a GPU
    plugins: List[str] = field(default_factory=list)  # extra task plugins: .py files or module names
    task_options: Any = None  # the task's own dataclass, from the `task:` mapping
    source: Optional[str] = None  # the file it was read from

    def to_dict(self) -> Dict[str, Any]:
        """The resolved recipe as plain data, in the same shape as the YAML."""
        out = {
            "name": self.name,
            "task": {"name": self.task, **to_plain(self.task_options or {})},
            "seed": self.seed,
            "device": self.device,
            "plugins": list(self.plugins),
            "data": to_plain(self.data),
            "encoder": to_plain(self.encoder),
            "train": to_plain(self.train),
        }
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# --------------------------------------------------------------------------
# Step 1: YAML with line numbers
# --------------------------------------------------------------------------
def read_yaml(text: str, file: Optional[str]) -> Tuple[Any, Dict[str, int]]:
    """Parse YAML safely and return (data, {dotted key: line number})."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).split("\n")[0]
        raise NlptkError(f"{file or 'recipe'}{line}: invalid YAML: {problem}; check indentation, colons and quotes") from None
    except RecursionError:
        raise NlptkError(f"{file or 'recipe'}: nested far too deeply to be a recipe (more than {MAX_DEPTH} levels); check the brackets") from None
    check_shape(data, file)
    lines: Dict[str, int] = {}

    def walk(n: Any, prefix: str) -> None:
        if isinstance(n, yaml.MappingNode):
            seen = set()
            for k, v in n.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                if k.value in seen:
                    raise NlptkError(f"{file or 'recipe'}:{k.start_mark.line + 1}: {key}: duplicate key; keep only one")
                seen.add(k.value)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(n, yaml.SequenceNode):
            for i, v in enumerate(n.value):
                lines[f"{prefix}[{i}]"] = v.start_mark.line + 1
                walk(v, f"{prefix}[{i}]")

    walk(node, "")
    return data, lines


MAX_DEPTH = 32  # a real recipe nests 3-4 levels
MAX_NODES = 100_000  # values after expanding YAML aliases (&a / *a)


def check_shape(data: Any, file: Optional[str]) -> None:
    """Refuse YAML no recipe has: deep nesting, aliases that contain themselves, or
    aliases that expand to huge data ("billion laughs"), before anything walks it."""
    name = file or "recipe"
    count = 0
    stack: List[Tuple[Any, int, Tuple[int, ...]]] = [(data, 0, ())]
    while stack:
        value, depth, parents = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise NlptkError(f"{name}: the YAML expands to more than {MAX_NODES} values (through aliases such as *a); write the recipe out plainly")
        if isinstance(value, (dict, list)):
            if depth >= MAX_DEPTH:
                raise NlptkError(f"{name}: nested far too deeply to be a recipe (more than {MAX_DEPTH} levels); check the brackets")
            if id(value) in parents:
                raise NlptkError(f"{name}: a YAML alias (*name) refers to a mapping or list that contains it; remove the loop")
            children = value.values() if isinstance(value, dict) else value
            inner = parents + (id(value),)
            stack.extend((child, depth + 1, inner) for child in children)


# --------------------------------------------------------------------------
# Step 2: environment interpolation
# --------------------------------------------------------------------------
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def interpolate(value: Any, key: str, where: Locator, env: Optional[Dict[str, str]] = None) -> Any:
    """Replace ``${VAR}`` and ``${VAR:-default}`` in every string of ``value``."""
    env = os.environ if env is None else env
    if isinstance(value, dict):
        return {k: interpolate(v, f"{key}.{k}" if key else str(k), where, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, f"{key}[{i}]", where, env) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def substitute(match: "re.Match[str]") -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise where.error(key, f"environment variable {name} is not set; set it, or write ${{{name}:-default}}")

    result = _VAR.sub(substitute, value)
    if _VAR.fullmatch(value):  # a whole-value variable takes the type its text reads as (3 -> int)
        try:
            loaded = yaml.safe_load(result)
        except (yaml.YAMLError, RecursionError):
            return result
        check_shape(loaded, f"{where.file or 'recipe'}: {key}")
        return loaded
    return result


# --------------------------------------------------------------------------
# Step 3: command-line overrides
# --------------------------------------------------------------------------
def apply_overrides(data: Dict[str, Any], overrides: Sequence[str], where: Locator) -> Dict[str, Any]:
    """Apply ``key.path=value`` strings; values are read as YAML (``3``, ``gru``, ``[1, 2]``)."""
    for item in overrides:
        if "=" not in item:
            raise NlptkError(f"--set {item}: expected KEY=VALUE, for example --set train.epochs=3")
        path, text = item.split("=", 1)
        keys = path.strip().split(".")
        if not all(keys):
            raise NlptkError(f"--set {item}: empty key in '{path}'; use dotted keys such as train.lr=0.001")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        except RecursionError:
            raise NlptkError(f"--set {path.strip()}: the value is nested far too deeply (more than {MAX_DEPTH} levels)") from None
        check_shape(value, f"--set {path.strip()}")
        node = data
        for i, k in enumerate(keys[:-1]):
            child = node.get(k)
            if child is None:
                child = node[k] = {}
            if not isinstance(child, dict):
                raise NlptkError(f"--set {item}: '{'.'.join(keys[:i + 1])}' is not a mapping, so it has no key '{keys[i + 1]}'")
            node = child
        node[keys[-1]] = value
        where.lines[path.strip()] = "--set"
    return data


# --------------------------------------------------------------------------
# Step 4: validation
# --------------------------------------------------------------------------
def load_recipe(path: str, overrides: Sequence[str] = (), registry: Any = None) -> Recipe:
    """Read, interpolate, override and validate a recipe file, or a bundled recipe by name."""
    p = Path(path)
    if not p.is_file():
        bundled = find_recipe(str(path))
        if bundled is None:
            names = ", ".join(recipe_files()) or "none"
            raise NlptkError(
                f"recipe {path} does not exist; give the path to a .yaml recipe or the name of a bundled one ({names}; see `nlptk recipes`)"
            )
        p = bundled
        path = str(p)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise NlptkError(f"{path}: not UTF-8 text (byte {exc.start}); save the recipe as UTF-8") from None
    data, lines = read_yaml(text, path)
    return recipe_from_dict(data, overrides, path, lines, registry)


def recipe_from_dict(
    data: Any,
    overrides: Sequence[str] = (),
    file: Optional[str] = None,
    lines: Optional[Dict[str, int]] = None,
    registry: Any = None,
) -> Recipe:
    where = Locator(file, dict(lines or {}))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise where.error("", f"a recipe is a mapping of keys (name, task, data, encoder, train), got {type(data).__name__}")
    data = interpolate(data, "", where)
    data = apply_overrides(data, overrides, where)

    task_section = data.get("task")
    if isinstance(task_section, str):
        raise where.error("task", f"expected a mapping such as `task: {{name: {task_section}}}`, got a string")
    if task_section is None:
        raise where.error("task", "missing required key 'task'; add `task: {name: sentiment}` (see `nlptk list`)")
    if not isinstance(task_section, dict):
        raise where.error("task", f"expected a mapping with at least `name:`, got {type(task_section).__name__}")
    if "name" not in task_section or not isinstance(task_section["name"], str):
        raise where.error("task.name", "missing the task's name; add `name:` under `task:` (see `nlptk list`)")

    general = {k: v for k, v in data.items() if k != "task"}
    general["task"] = task_section["name"]
    where.lines.setdefault("task", where.lines.get("task.name"))
    recipe = build(Recipe, general, "", where)
    for field_name in ("task_options", "source"):
        if field_name in general:
            raise where.error(field_name, f"unknown key '{field_name}'")
    recipe.source = file

    if registry is None:
        from nlptoolkit.registry import registry
    for i, plugin in enumerate(recipe.plugins):
        try:
            registry.load_plugin(plugin)
        except NlptkError as exc:
            raise where.error(f"plugins[{i}]", str(exc)) from None
    try:
        task_cls = registry.get(recipe.task)
    except NlptkError as exc:
        raise where.error("task.name", str(exc)) from None
    options = {k: v for k, v in task_section.items() if k != "name"}
    recipe.task_options = build(task_cls.Options, options, "task", where)
    try:
        task_cls.check_recipe(recipe)
    except NlptkError as exc:  # "task.key: message" -> the file and line of that key
        key, _, message = str(exc).partition(": ")
        raise (where.error(key, message) if message and re.fullmatch(r"[A-Za-z_][\w.]*", key) else where.error("task", str(exc))) from None
    metric = recipe.train.early_stopping.metric
    reported = task_cls.reported_metrics(recipe)
    if metric not in reported:
        kind = "" if metric not in task_cls.metrics else f" for this recipe (data.tokenizer.kind: {recipe.data.tokenizer.kind})"
        raise where.error(
            "train.early_stopping.metric",
            f"'{metric}' is not a metric of task '{recipe.task}'{kind}{did_you_mean(metric, reported)}; it reports {', '.join(reported)}",
        )
    check_data_section(recipe.data, where, task_cls)
    return recipe


def check_data_section(data: DataConfig, where: Locator, task_cls: Any = None) -> None:
    chosen = [k for k in ("hub", "files", "disk") if getattr(data, k) is not None]
    if len(chosen) != 1:
        got = "none" if not chosen else " and ".join(chosen)
        raise where.error("data", f"give exactly one data source (hub, files or disk), got {got}")
    if data.files is not None:
        if "train" not in data.files and not data.split:
            raise where.error("data.files", "needs a 'train' file; add `train: path/to/train.jsonl`")
        for split in data.files:
            if not re.fullmatch(r"[A-Za-z0-9_]+", split):
                raise where.error(f"data.files.{split}", "split names are letters, digits and _ (train, validation, test)")
    if data.split is not None:
        if "train" not in data.split:
            raise where.error("data.split", "needs a 'train' expression, e.g. {train: 'train[:90%]', validation: 'train[90%:]'}")
        for split, expression in data.split.items():
            if not re.fullmatch(r"[A-Za-z0-9_]+", split):
                raise where.error(f"data.split.{split}", "split names are letters, digits and _ (train, validation, test)")
            try:
                parse_split(expression, f"data.split.{split}")
            except NlptkError as exc:
                raise where.error(f"data.split.{split}", str(exc).split(": ", 1)[1]) from None
    if isinstance(data.columns, dict):
        if not data.columns:
            raise where.error("data.columns", "an empty mapping; map a task field to a column, e.g. {text: review_body}, or remove the key")
        for name, column in data.columns.items():
            if not column:
                raise where.error(f"data.columns.{name}", "an empty column name; give the data's column that holds the task's field")
    elif isinstance(data.columns, list) and data.format != "conll" and not _conll_files(data):
        raise where.error("data.columns", "a list names the columns of a CoNLL file; to rename columns give a mapping, e.g. {text: review_body}")
    if data.min_length is not None and data.max_length is not None and data.min_length > data.max_length:
        raise where.error("data.min_length", f"{data.min_length} is more than data.max_length {data.max_length}; no example could be kept")
    if data.streaming:
        if data.format == "conll" or _conll_files(data):
            raise where.error("data.streaming", "CoNLL files are read whole; turn streaming off, or convert the data to json lines")
        if task_cls is not None and not getattr(task_cls, "streams", False):
            raise where.error(
                "data.streaming",
                f"task '{task_cls.name}' reads its data in memory and cannot stream it; set data.streaming: false "
                "(streaming tasks: those with `streams = True`, e.g. language_model and sentiment)",
            )


def _conll_files(data: DataConfig) -> bool:
    paths = [p for v in (data.files or {}).values() for p in ([v] if isinstance(v, str) else v)]
    return bool(paths) and all(p.removesuffix(".gz").endswith(".conll") for p in paths)
