"""The `nlptk` command line.

    nlptk run recipes/sentiment.yaml          train a recipe into runs/<name>/
    nlptk validate recipes/sentiment.yaml     check a recipe without training
    nlptk evaluate runs/sentiment --files test=test.jsonl --json
    nlptk predict runs/sentiment "a gorgeous, witty, seductive movie."
    nlptk generate runs/char_lm --prompt "ROMEO:"
    nlptk serve runs/sentiment --port 8000     an HTTP JSON API with dynamic batching
    nlptk export runs/sentiment --out DIR      the model for torch.jit / onnxruntime
    nlptk list                                 tasks and where they come from
    nlptk recipes                              the bundled recipes (nlptk run NAME)
    nlptk init sentiment > my.yaml             a commented starter recipe for a task
    nlptk new-plugin my_task                   a working task plugin to start from

Mistakes in input (recipe, data, checkpoint, arguments) print one line and
exit with code 2; `--debug` shows the traceback instead.
"""
from __future__ import annotations

import json
import os
import sys
from typing import Any, List, Optional, Sequence

import click

from nlptoolkit.errors import NlptkError

_DEBUG = False


def _fail(message: str) -> None:
    # one line, always: a newline or control character inside a recipe key or a data
    # value that the message quotes is shown escaped (\n, \x1b, \u2028)
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in message)
    click.echo(f"error: {shown}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--plugin", "plugins", multiple=True, metavar="PATH", help="Load a task plugin from a .py file or module name (repeatable).")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.version_option(package_name="nlptoolkit", prog_name="nlptk")
def cli(plugins: Sequence[str], debug: bool) -> None:
    """Train and study recurrent models for language from YAML recipes.

    A recipe names a task (see `nlptk list`), its data, the shared RNN encoder
    and the training settings. `nlptk run RECIPE` writes a run folder that the
    other commands read.
    """
    global _DEBUG
    _DEBUG = _DEBUG or debug
    from nlptoolkit.registry import registry

    for plugin in plugins:
        registry.load_plugin(plugin)


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False), required=False)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key, e.g. --set train.epochs=3 --set encoder.cell=gru.")
@click.option("--output-dir", type=click.Path(file_okay=False), help="Run folder to write (default: runs/<recipe name>).")
@click.option("--force", is_flag=True, help="Replace the run folder if it already exists.")
@click.option("--resume", type=click.Path(file_okay=False), metavar="RUN_DIR", help="Continue an interrupted run from its last.pt (with no RECIPE: the run folder's own recipe.yaml).")
@click.option("--override", "allow_changes", multiple=True, metavar="KEY", help="With --resume: accept that recipe KEY (or a section) differs from the saved recipe (repeatable).")
@click.option("--quiet", is_flag=True, help="Only one line per evaluation. Without it a terminal shows a progress bar, and a log file (stderr redirected) gets plain lines: one per evaluation and one every 30 s.")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True, help="Train with N processes (torch.distributed, DDP); train.batch_size is the global batch.")
def run(
    recipe: Optional[str], overrides: Sequence[str], output_dir: Optional[str], force: bool, resume: Optional[str],
    allow_changes: Sequence[str], quiet: bool, nproc: int,
) -> None:
    """Train RECIPE (a .yaml file, or a bundled recipe's name), evaluate it, and write a run folder.

    The folder (default runs/<name>) gets recipe.yaml, metrics.jsonl,
    summary.json, best.pt, last.pt and curves.png. Paths in the recipe are
    relative to the current folder; ${VAR:-default} reads the environment.
    Ctrl-C or SIGTERM saves last.pt and prints the command that continues
    it, `nlptk run --resume RUN_DIR`: with no RECIPE a resumed run reads the
    run folder's own recipe.yaml (the --set values it was started with are in
    it). Given a RECIPE too, that recipe must match the saved one except for
    the keys --override names. Either way it continues exactly.
    """
    if allow_changes and not resume:
        raise NlptkError(f"--override {allow_changes[0]}: only makes sense with --resume RUN_DIR; use --set KEY=VALUE to change a new run")
    if recipe is None and not resume:
        raise NlptkError("run: give a RECIPE to train (nlptk run recipes/sentiment.yaml), or --resume RUN_DIR to continue a run")
    if nproc > 1:
        from nlptoolkit.distributed import launch

        args = ["run", *([recipe] if recipe else []), *[a for o in overrides for a in ("--set", o)]] + (["--quiet"] if quiet else [])
        args += (["--output-dir", output_dir] if output_dir else []) + (["--force"] if force else [])
        args += ["--resume", resume] if resume else []
        args += [a for k in allow_changes for a in ("--override", k)]
        sys.exit(launch(nproc, args))
    from nlptoolkit.runs import train

    summary = train(recipe, overrides, output_dir, force, quiet, resume, allow_changes)
    if summary.get("rank", 0) != 0:
        return
    best = summary["best"]
    from nlptoolkit.registry import registry

    headline = registry.get(summary["task"]).metrics  # summary.json keeps every key
    final = " ".join(f"{k}={v:.4f}" for k, v in summary["final"].items() if k in headline)
    click.echo(
        f"finished ({summary['stopped']}) in {summary['train_seconds']:.1f} s, {summary['steps']} steps; "
        f"best validation {best['metric']}={best['value']:.4f} at step {best['step']}; final validation {final}; "
        f"run folder {summary['run_dir']}"
    )


@cli.command()
@click.argument("recipe", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key before checking.")
def validate(recipe: str, overrides: Sequence[str]) -> None:
    """Check RECIPE (keys, types, task, plugins, data files) without training."""
    from nlptoolkit.recipe import load_recipe

    from pathlib import Path

    from nlptoolkit.bundled import resolve_data_path

    loaded = load_recipe(recipe, overrides)
    if loaded.data.files:
        for split, paths in loaded.data.files.items():
            for i, path in enumerate([paths] if isinstance(paths, str) else paths):
                key = f"data.files.{split}" if isinstance(paths, str) else f"data.files.{split}[{i}]"
                if not Path(resolve_data_path(path, f"{recipe}: {key}")).is_file():
                    raise NlptkError(f"{recipe}: {key}: file {path} does not exist (relative paths start from the current folder)")
    click.echo(f"{recipe}: ok (task {loaded.task})")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--files", "files", multiple=True, metavar="SPLIT=FILE", help="Evaluate on FILE (same format and fields as training data) and call it SPLIT.")
@click.option("--split", "splits", multiple=True, help="Evaluate on a split of the recipe's own data (default: validation).")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object of metrics and nothing else on stdout.")
@click.option("--beam", type=click.IntRange(min=1), default=None, help="Sequence tasks: decode with beam search of this size (1: greedy; default: the recipe's).")
def evaluate(run_dir: str, files: Sequence[str], splits: Sequence[str], checkpoint: str, as_json: bool, beam: Optional[int]) -> None:
    """Compute the metrics of a finished run on held-out data.

    With one --files or --split, --json prints {"metric": value, ...}; with
    several, {"split": {"metric": value}, ...}.
    """
    from nlptoolkit.api import load

    wanted = {}
    for item in files:
        if "=" not in item:
            raise NlptkError(f"--files {item}: expected SPLIT=FILE, for example --files test=data/test.jsonl")
        split, path = item.split("=", 1)
        wanted[split] = path
    decoding = {"beam_size": beam} if beam is not None else {}
    results = load(run_dir, checkpoint).evaluate_many(wanted, list(splits) or ([] if wanted else ["validation"]), **decoding)
    if as_json:
        click.echo(json.dumps(next(iter(results.values())) if len(results) == 1 else results))
    else:
        for split, metrics in results.items():
            click.echo(f"{split}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.argument("texts", nargs=-1)
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), help="Read inputs from a file, one per line.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per input (all the task returns) instead of a line of text.")
@click.option("--beam", type=click.IntRange(min=1), default=None, help="Sequence tasks: beam search of this size (1: greedy; default: the recipe's).")
@click.option("--nbest", type=click.IntRange(min=1), default=None, help="Sequence tasks: print the N best outputs with their scores (needs --beam N or more).")
@click.option("--features", "features_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="For a task that reads feature vectors (captioning): FILE holds one JSON list of numbers, or JSON Lines of them.")
def predict(
    run_dir: str, texts: Sequence[str], file: Optional[click.utils.LazyFile], as_json: bool, beam: Optional[int], nbest: Optional[int],
    features_file: Optional[str],
) -> None:
    """Predict for each input text (arguments, --file, or one per line on stdin),
    or for each feature vector of --features FILE.

    One line per input, in input order; with --json one JSON object per line
    (for a classifier: input, label, probability, probabilities; for seq2seq:
    input, output, score and the n-best list; for captioning: caption, score
    and the n-best list).

    \b
    Examples:
      nlptk predict runs/g2p hello world --beam 5 --nbest 3
      nlptk predict runs/captioning --features image_features.jsonl
    """
    from nlptoolkit.api import load

    if features_file is not None:
        if texts or file is not None:
            raise NlptkError("predict: give either texts (arguments or --file) or --features FILE, not both")
        run = load(run_dir)
        if run.task.input_kind != "features":
            raise NlptkError(f"--features {features_file}: a '{run.task.name}' run reads text, not feature vectors; give texts as arguments or --file FILE")
        from nlptoolkit.data.features import read_feature_file

        inputs: List[Any] = read_feature_file(features_file, run.task.feature_size).tolist()
    else:
        inputs = list(texts)
        if file is not None:
            inputs += [line.rstrip("\n") for line in file]
        if not texts and file is None:
            inputs += [line.rstrip("\n") for line in sys.stdin]
        inputs = [t for t in inputs if t.strip()]
        if not inputs:
            raise NlptkError("predict: no input text; pass texts as arguments, --file FILE, or lines on stdin")
        run = load(run_dir)
    decoding = {k: v for k, v in (("beam_size", beam), ("nbest", nbest)) if v is not None}
    for result in run.predict(inputs, **decoding):
        click.echo(json.dumps(result, ensure_ascii=False) if as_json else run.format_prediction(result))


@cli.command(name="export")
@click.argument("run_dir", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["torchscript", "onnx"]), default="torchscript", show_default=True,
              help="torchscript: .pt files for torch.jit.load; onnx: .onnx files for onnxruntime (pip install 'nlptoolkit[export]').")
@click.option("--out", required=True, type=click.Path(), help="The folder to write; it must not exist or be empty, unless --force.")
@click.option("--force", is_flag=True, help="Replace an existing non-empty --out folder.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True, help="Which checkpoint of the run to export.")
def export_command(run_dir: str, fmt: str, out: str, force: bool, checkpoint: str) -> None:
    """Export a run's model for use without nlptoolkit, with its vocabularies and a manifest.

    The folder gets manifest.json (task, every file's inputs and outputs with
    names, dtypes and shapes, labels, special ids, how text becomes tokens),
    the model (model.pt or model.onnx; a language model or seq2seq run gives
    encoder.* and decoder_step.*: read the input, then one token per step) and
    each vocabulary as NAME.json (the string of every id). Inputs are padded
    ids (0 at padding) and the true lengths; the outputs equal the run's own.
    Each file is loaded back and checked against the run on a fresh batch
    before the folder appears; the manifest records the difference.

    \b
    Examples:
      nlptk export runs/sentiment --out exported/sentiment
      nlptk export runs/sentiment --format onnx --out exported/sentiment-onnx
      nlptk export runs/g2p --format onnx --out exported/g2p      # encoder.onnx, decoder_step.onnx
    \b
    Then, outside nlptoolkit (ids from vocab.json; manifest.json lists every input):
      model = torch.jit.load("exported/sentiment/model.pt")
      logits = model(tokens, lengths)             # (batch, time) int64 ids, (batch,) int64
      session = onnxruntime.InferenceSession("exported/sentiment-onnx/model.onnx")
      (logits,) = session.run(None, {"tokens": tokens.numpy(), "lengths": lengths.numpy()})
    """
    from nlptoolkit.api import load
    from nlptoolkit.export import require_format

    require_format(fmt)  # a missing extra is named before the run is read
    manifest = load(run_dir, checkpoint).export(out, fmt, force)
    files = [g["file"] for g in manifest["graphs"].values()] + list(manifest["vocabularies"].values())
    files += [t["model"] for t in manifest["tokenizers"].values() if "model" in t]  # a sentencepiece model
    checks = ", ".join(f"{name} {g['check']['max_abs_difference']:.1e}" for name, g in manifest["graphs"].items())
    click.echo(f"wrote {out}: {', '.join(files)}, manifest.json (task {manifest['task']}, {fmt}; "
               f"largest difference from the run on a fresh batch: {checks})")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--prompt", default="", help="Text to start from (empty: start of text).")
@click.option("--max-tokens", default=200, show_default=True, type=click.IntRange(min=0), help="Tokens to generate.")
@click.option("--temperature", default=1.0, show_default=True, type=float, help="Sampling temperature; 0 means greedy.")
@click.option("--top-k", default=None, type=click.IntRange(min=1), help="Sample only from the k most likely tokens.")
@click.option("--seed", default=None, type=int, help="Random seed for sampling.")
@click.option("--weights", type=click.Choice(["fp32", "fp16", "int8"]), default=None,
              help="How the steps' weights are stored [default: the recipe's task.generation_weights, else fp32]. fp16/int8 read "
                   "2-4x fewer bytes a step (faster on a CPU); used only if they moved the validation loss by at most "
                   "task.generation_tolerance, measured once per checkpoint, else fp32.")
def generate(run_dir: str, prompt: str, max_tokens: int, temperature: float, top_k: Optional[int], seed: Optional[int], weights: Optional[str]) -> None:
    """Stream text from a trained language model.

    The prompt is read once; after that each new token is one RNN step from
    the carried state, so 10x the tokens take 10x the time.

    \b
    Example:
      nlptk generate runs/char_lm --prompt "ROMEO:" --max-tokens 500 --temperature 0.8 --top-k 20 --seed 1
    """
    from nlptoolkit.api import load

    if temperature < 0:  # before loading the run: a mistake in the arguments is reported first
        raise NlptkError(f"--temperature {temperature}: must be 0 (greedy) or positive")
    for piece in load(run_dir).generate_stream(prompt, max_tokens, temperature, top_k, seed, weights):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on; 0.0.0.0 makes the server reachable from other machines.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on; 0 picks a free one (the ready line names it).")
@click.option("--max-batch-size", default=64, show_default=True, type=click.IntRange(min=1), help="Most texts in one model call; requests are never split.")
@click.option("--max-wait-ms", default=2.0, show_default=True, type=click.FloatRange(min=0),
              help="How long the first request of a batch may wait for others to join it. Under load, batches also form from what queues while the model runs.")
@click.option("--no-batching", is_flag=True, help="Run each request on its own (as --max-batch-size 1 --max-wait-ms 0), to compare.")
@click.option("--max-texts", default=64, show_default=True, type=click.IntRange(min=1), help="Most texts in one /predict request (more: 413).")
@click.option("--max-chars", default=2000, show_default=True, type=click.IntRange(min=1), help="Longest text or /generate prompt, in characters (longer: 413).")
@click.option("--max-new-tokens", default=2000, show_default=True, type=click.IntRange(min=0), help="Most tokens one /generate request may ask for.")
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1), help="Torch threads for the model; the HTTP side runs on its own thread. 1: on 2 cores, 2 threads cost 45% more CPU per request and served fewer requests/s (benchmarks/bench_serve.py).")
@click.option("--access-log/--no-access-log", default=True, show_default=True, help="One line per request.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
def serve(
    run_dir: str, host: str, port: int, max_batch_size: int, max_wait_ms: float, no_batching: bool, max_texts: int, max_chars: int,
    max_new_tokens: int, threads: int, access_log: bool, checkpoint: str,
) -> None:
    """Serve a finished run over HTTP (FastAPI on uvicorn; pip install "nlptoolkit[serve]").

    \b
    POST /predict   {"texts": ["...", ...]}: one JSON object per text, as `nlptk predict --json`
    POST /generate  {"prompt": "...", "max_tokens": 200, "temperature": 1.0, "top_k": null, "seed": null}:
                    text streamed as it is made (language models)
    GET  /health    GET /info (task, labels, recipe, limits)

    Requests that arrive within --max-wait-ms of each other run as one
    length-bucketed batch, on one model thread. A bad request gets a 4xx with
    {"error": "..."} and the server carries on. SIGTERM or Ctrl-C finishes the
    requests in flight, then exits 0.

    \b
    Example:
      nlptk serve runs/sentiment --port 8000
      curl -s localhost:8000/predict -d '{"texts": ["a gorgeous, witty, seductive movie."]}'
    """
    from nlptoolkit.serve import require_extra

    require_extra()  # before loading the run: a missing extra is the first thing to fix
    from nlptoolkit.serve import serve as serve_run
    from nlptoolkit.serve.app import ServeSettings
    from nlptoolkit.serve.requests import Limits

    limits = Limits(max_texts=max_texts, max_chars=max_chars, max_new_tokens=max_new_tokens)
    settings = ServeSettings.unbatched(limits) if no_batching else ServeSettings(max_batch_size, max_wait_ms, limits)
    serve_run(run_dir, host, port, settings, access_log=access_log, checkpoint=checkpoint, threads=threads)


@cli.command()
@click.argument("run_dir", type=click.Path())
@click.option("--text", "text_file", required=True, type=click.Path(dir_okay=False), help="The text to read (UTF-8), e.g. a stretch of validation data.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The HTML report to write (one self-contained file).")
@click.option("--units", metavar="L:I,...", help="Units to show, e.g. 2:87,1:c:12 (layer from 1; c: an LSTM's cell state, else the hidden state).")
@click.option("--find", is_flag=True, help="Rank every unit against every probe (the default when --units is not given).")
@click.option("--top", default=3, show_default=True, type=click.IntRange(min=1), help="Units listed and shown per probe.")
@click.option("--max-tokens", default=2000, show_default=True, type=click.IntRange(min=1), help="Read only the first N tokens of the text.")
@click.option("--json", "as_json", is_flag=True, help="Also print the ranking as one JSON object on stdout.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
def inspect(
    run_dir: str, text_file: str, out: str, units: Optional[str], find: bool, top: int, max_tokens: int, as_json: bool, checkpoint: str,
) -> None:
    """Colour a text by what the hidden units of a trained run do, and find units that track probes.

    The report shows the text with each token red where a unit is positive
    and blue where it is negative (Karpathy, Johnson & Fei-Fei 2015).
    --find holds every unit of every layer (hidden and cell state) up
    against probes computed from the text (inside quotes, bracket depth,
    position in the line, start of a word, end of a sentence, and any a
    plugin registers with nlptoolkit.register_probe) and lists the units
    with the highest |correlation|.

    \b
    Example:
      nlptk inspect runs/char_lm --text valid.txt --out report.html --find --json
      nlptk inspect runs/char_lm --text valid.txt --out units.html --units 2:c:87
    """
    from pathlib import Path

    from nlptoolkit.inspection.analysis import analyse
    from nlptoolkit.inspection.report import write_report
    from nlptoolkit.registry import registry
    from nlptoolkit.runs import load_run

    text = read_text_file(text_file, "--text")
    recipe, task, model = load_run(run_dir, checkpoint)
    probes = registry.all_probes()
    result = analyse(task, model, text, probes, units=units, find=find or not units, top=top, max_tokens=max_tokens)
    enc = recipe.encoder
    read = f"{len(result.tokens):,} tokens" + (f" (the first of {result.truncated_from:,}; see --max-tokens)" if result.truncated_from else "")
    details = [
        f"Run {run_dir} ({checkpoint}.pt), task {recipe.task}: {enc.num_layers}-layer "
        f"{'bidirectional ' if enc.bidirectional else ''}{enc.cell.upper()}, {enc.hidden_size} units per layer and direction.",
        f"Text {text_file}: {read}.",
    ]
    write_report(result, Path(out), f"What the units of {Path(run_dir).name} respond to", details, probes)
    if as_json:
        click.echo(json.dumps(result.ranking_json()))
    else:
        for name, ranked in result.ranking.items():
            best = ranked[0]
            click.echo(f"{name}: best unit {best.unit} correlation {best.correlation:+.3f}")
        for name, why in result.skipped.items():
            click.echo(f"{name}: not ranked, the probe is {why}")
        click.echo(f"wrote {out} ({result.units_scanned:,} units scanned over {len(result.tokens):,} tokens)")


@cli.command()
@click.argument("source", metavar="RECIPE_OR_RUN", type=click.Path(exists=True))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for gradient_norms.png and gradient_norms.csv.")
@click.option("--steps", default=100, show_default=True, type=click.IntRange(min=2, max=10_000), help="Sequence length: how far back to measure.")
@click.option("--samples", default=16, show_default=True, type=click.IntRange(min=1, max=4096), help="Sequences to average over (geometric mean).")
@click.option("--text", "text_file", type=click.Path(dir_okay=False), help="With a run: read windows of this text (default: random tokens).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the initial weights and random inputs.")
@click.option("--json", "as_json", is_flag=True, help="Print {curve: fall over 50 steps, ...} as one JSON object.")
def gradients(source: str, out: str, steps: int, samples: int, text_file: Optional[str], seed: int, as_json: bool) -> None:
    """Plot how the gradient vanishes: ||dL/dh_t|| against the distance back from the loss.

    For a loss at the last step, measure the norm of its gradient with
    respect to the hidden state h_t (all layers) at every earlier step, for
    an RNN, an LSTM and a GRU with the recipe's sizes at initialisation, and
    for the run's own trained encoder when RECIPE_OR_RUN is a run folder.
    Writes gradient_norms.png (log scale) and gradient_norms.csv to --out and
    prints by how much each curve falls over 50 steps.

    \b
    Example:
      nlptk gradients recipes/char_lm.yaml --out plots/
      nlptk gradients runs/char_lm --out plots/ --text valid.txt
    """
    from pathlib import Path

    from nlptoolkit.gradients import study, write_outputs

    text = read_text_file(text_file, "--text") if text_file else None
    if text is not None and not Path(source).is_dir():
        raise NlptkError(f"--text {text_file}: only used with a run folder (a trained model reads it); {source} is a recipe")
    result = study(source, steps, samples, text, seed)
    write_outputs(result, Path(out), f"Vanishing gradients: {Path(source).stem}")
    distance = min(50, steps - 1)
    falls = result.falls(distance)
    if as_json:
        click.echo(json.dumps({"distance": distance, "fall": falls, "notes": result.notes}))
        return
    for label, fall in falls.items():
        click.echo(f"{label}: the gradient norm falls {fall:.3g}x over {distance} steps")
    for note in result.notes:
        click.echo(f"({note})")
    click.echo(f"wrote {Path(out) / 'gradient_norms.png'} and gradient_norms.csv")


@cli.command()
@click.argument("runs", nargs=-1, required=True, metavar="RUN [RUN ...]", type=click.Path())
@click.option("--metric", "metrics", multiple=True, default=("loss",), show_default=True,
              help="What to plot (repeatable, one panel each): a validation metric (loss also shows the training loss), "
              "or grad_norm, grad_norm_max, clipped_fraction, lr, tokens_per_second.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="PNG file to write.")
@click.option("--log", "log_scale", is_flag=True, help="Logarithmic y axis.")
def plot(runs: Sequence[str], metrics: Sequence[str], out: str, log_scale: bool) -> None:
    """Training and validation curves of one or more runs, overlaid and labelled by run name.

    \b
    Example:
      nlptk plot runs/char_lm runs/char_lm_gru --metric loss --metric clipped_fraction --out compare.png
    """
    from pathlib import Path

    from nlptoolkit.plots import plot_runs

    plot_runs(list(runs), list(metrics), Path(out), log_scale)
    click.echo(f"wrote {out}")


def read_text_file(path: str, option: str) -> str:
    """A UTF-8 text file, or a one-line error naming the option."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise NlptkError(f"{option} {path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise NlptkError(f"{option} {path}: not UTF-8 text (byte {exc.start}); convert it to UTF-8") from None
    except OSError as exc:
        raise NlptkError(f"{option} {path}: cannot read it ({exc.strerror})") from None


@cli.command(name="list")
def list_tasks() -> None:
    """List the available tasks, what they do, and where they come from."""
    from nlptoolkit.registry import registry

    entries = registry.entries()
    width = max([len(e.name) for e in entries] + [4])
    for e in entries:
        click.echo(f"{e.name:<{width}}  {e.description}  [{e.source}]")
    for source, reason in registry.failures.items():
        click.echo(f"{'(failed)':<{width}}  {source}: {reason}")


@cli.command(name="recipes")
def list_recipes() -> None:
    """List the recipes that ship with nlptk; run one by name: `nlptk run NAME`."""
    from nlptoolkit.bundled import describe_recipe, recipe_files

    files = recipe_files()
    width = max([len(name) for name in files] + [4])
    for name, path in files.items():
        outside = "  [data not bundled: set NLPTK_DATA]" if "${NLPTK_DATA" in path.read_text(encoding="utf-8") else ""
        click.echo(f"{name:<{width}}  {describe_recipe(path)}{outside}")


@cli.command()
@click.argument("task")
def init(task: str) -> None:
    """Print a starter recipe for TASK: every key, its default and what it does.

    \b
    Example:
      nlptk init sentiment > my.yaml     # then edit data.files and run: nlptk run my.yaml
    """
    from nlptoolkit.registry import registry
    from nlptoolkit.starter import starter_recipe

    click.echo(starter_recipe(registry.get(task)), nl=False)


@cli.command(name="new-plugin")
@click.argument("name")
@click.option("--dir", "folder", default=".", show_default=True, type=click.Path(), help="Folder to write the three files into (made if missing).")
def new_plugin(name: str, folder: str) -> None:
    """Write a working task plugin named NAME to start from: NAME.py, NAME.yaml, test_NAME.py.

    The skeleton is a text classifier on the shared encoder with every hook
    of the Task API in place; it trains as written (`nlptk run NAME.yaml`
    on the bundled movie snippets) and passes its own test. Comments marked
    CHANGE say what to edit; docs/plugins.md explains each hook. Existing
    files are never overwritten.

    \b
    Example:
      nlptk new-plugin review_score --dir review_score
      cd review_score && python -m pytest -q && nlptk run review_score.yaml
    """
    from pathlib import Path

    from nlptoolkit.registry import registry
    from nlptoolkit.scaffold import check_name, write_plugin

    check_name(name)
    taken = {e.name: e.source for e in registry.entries()}
    if name in taken:
        raise NlptkError(f"new-plugin {name}: a task of that name already exists ({taken[name]}); pick another name")
    for path in write_plugin(name, Path(folder)):
        click.echo(f"wrote {path}")
    where = "" if Path(folder) == Path(".") else f"cd {folder} && "
    click.echo(f"next: {where}python -m pytest -q test_{name}.py && nlptk run {name}.yaml")


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point of the `nlptk` console script."""
    global _DEBUG
    args = sys.argv[1:] if argv is None else list(argv)
    _DEBUG = "--debug" in args
    from nlptoolkit.trainer import TrainingInterrupted

    try:
        cli.main(args=args, prog_name="nlptk", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("aborted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except NlptkError as exc:
        if _DEBUG:
            raise
        _fail(str(exc))
        sys.exit(exc.exit_code)
    except TrainingInterrupted as exc:
        if os.environ.get("RANK", "0") == "0":  # one "Resume with" line, not one per process
            _fail(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    sys.exit(0)


if __name__ == "__main__":
    main()
