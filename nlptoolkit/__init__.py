"""nlptoolkit: train and study recurrent models for language from YAML recipes.

The public API for plugin authors is what this module exports: subclass
:class:`Task`, decorate it with :func:`register_task`, build the model on
:class:`RNNEncoder` (with :class:`Stepper` to run it a token at a time when
generating, :class:`CharEncoder` for character features of words, :class:`CRF`
for a tag-sequence output layer), write sequences with :class:`RNNDecoder` and the
search of :mod:`nlptoolkit.search` (its docstring gives the decoder contract;
a task's options inherit the recipe keys of :class:`DecodingOptions`),
declare options with :func:`at_least` for bounded numbers, and use the data helpers
for tokens, vocabularies and batches (:func:`is_streamed` and :class:`StreamedExamples`
for a task that reads ``data.streaming`` splits row by row). A task that can be exported
(`nlptk export`) returns an :class:`Exportable` of :class:`ExportGraph` from ``Task.exportable``.
Plugins import nothing else from nlptoolkit.

For scripts and notebooks: :func:`train` a recipe, :func:`load` a run folder,
then ``run.predict([...])``, ``run.evaluate(files)`` and ``run.export(folder)`` (see ``nlptoolkit/api.py``).
"""
from nlptoolkit.char_features import CharEncoder, char_batch
from nlptoolkit.config_schema import at_least
from nlptoolkit.crf import CRF
from nlptoolkit.data import BucketSampler, Tokenizer, Vocabulary, build_tokenizer, column, iter_column, load_tokenizer, pad_batch
from nlptoolkit.data.features import feature_matrix, read_feature_file
from nlptoolkit.data.selection import is_streamed
from nlptoolkit.data.streaming import StreamedExamples
from nlptoolkit.decoder import Attention, Bridge, DecoderState, EncoderDecoder, Memory, RNNDecoder
from nlptoolkit.encoder import EncoderOutput, RNNEncoder
from nlptoolkit.errors import NlptkError
from nlptoolkit.export.graph import Exportable, ExportGraph, example_tokens
from nlptoolkit.metrics import accuracy, classification_metrics, macro_f1
from nlptoolkit.recipe import TokenizerConfig
from nlptoolkit.registry import register_probe, register_task
from nlptoolkit.search import DecodingOptions, Hypothesis, SearchOptions, beam_search, decode, greedy_search
from nlptoolkit.stepper import Stepper
from nlptoolkit.task import Task
from nlptoolkit.api import Run, load, train

__version__ = "0.1.0"
__all__ = [
    "Task", "register_task", "register_probe", "RNNEncoder", "EncoderOutput", "Stepper", "NlptkError",
    "Vocabulary", "Tokenizer", "TokenizerConfig", "build_tokenizer", "load_tokenizer", "column", "iter_column", "pad_batch", "BucketSampler",
    "accuracy", "macro_f1", "classification_metrics", "CRF", "CharEncoder", "char_batch", "at_least", "__version__",
    "feature_matrix", "read_feature_file", "is_streamed", "StreamedExamples",
    "train", "load", "Run",
    "RNNDecoder", "EncoderDecoder", "Memory", "DecoderState", "Bridge", "Attention",
    "DecodingOptions", "SearchOptions", "Hypothesis", "decode", "greedy_search", "beam_search",
    "Exportable", "ExportGraph", "example_tokens",
]
