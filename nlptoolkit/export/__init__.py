"""Export a trained run for use outside nlptoolkit: TorchScript or ONNX, with its vocabularies.

``nlptk export RUN --format torchscript|onnx --out DIR`` (or ``run.export(DIR)``)
writes a folder that a consumer can use with ``torch.jit.load`` or
``onnxruntime`` alone::

    manifest.json      task, format, every graph's inputs and outputs (names,
                       dtypes, shapes), labels, special ids, how text becomes ids
    model.pt|.onnx     the classifier or tagger (an LM or seq2seq model gives
                       encoder.* and decoder_step.* instead)
    vocab.json ...     each vocabulary: the string of every id
    *.spm.model        a sentencepiece tokenizer, when the run has one

A task says what to export through one hook, :meth:`nlptoolkit.Task.exportable`,
returning an :class:`Exportable` (see ``graph.py``); the core never imports a
plugin. Every module is traced once on a batch of variable-length sequences:
the shared encoder runs on padded ids plus lengths, never on packed
sequences (they do not trace), and gives the packed results exactly (see
``nlptoolkit/encoder.py``). After writing, each file is loaded back and run
on a batch of a different size against the run's own model (``check.py``);
the manifest records the difference.
"""
from nlptoolkit.export.graph import Exportable, ExportGraph, example_tokens
from nlptoolkit.export.formats import FORMATS, require_format
from nlptoolkit.export.writer import export_run

__all__ = ["Exportable", "ExportGraph", "example_tokens", "FORMATS", "require_format", "export_run"]
