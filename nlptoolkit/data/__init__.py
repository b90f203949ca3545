"""Data: loading through HF ``datasets``, tokenizers, vocabularies and batching."""
from nlptoolkit.data.batching import BucketSampler, pad_batch
from nlptoolkit.data.sources import column, iter_column, load_files, load_splits
from nlptoolkit.data.tokenizers import Tokenizer, build_tokenizer, load_tokenizer
from nlptoolkit.data.vocab import Vocabulary

__all__ = [
    "BucketSampler", "pad_batch", "column", "iter_column", "load_files", "load_splits",
    "Tokenizer", "build_tokenizer", "load_tokenizer", "Vocabulary",
]
