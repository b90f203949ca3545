"""Tokenizers: text to a list of token strings, and back.

``char`` and ``word`` need no training. ``sentencepiece`` (unigram or BPE) is
trained on the train split and saved in the run folder as ``tokenizer.model``.
"""
from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Iterable, List, Optional

from nlptoolkit.errors import NlptkError

SPM_FILE = "tokenizer.model"


class Tokenizer:
    kind = "base"

    def __init__(self, lowercase: bool = False) -> None:
        self.lowercase = lowercase

    def normalize(self, text: str) -> str:
        return text.lower() if self.lowercase else text

    def tokenize(self, text: str) -> List[str]:
        raise NotImplementedError

    def detokenize(self, tokens: Iterable[str]) -> str:
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        """Write whatever a later `load_tokenizer` needs besides the recipe."""


class CharTokenizer(Tokenizer):
    kind = "char"

    def tokenize(self, text: str) -> List[str]:
        return list(self.normalize(text))

    def detokenize(self, tokens: Iterable[str]) -> str:
        return "".join(tokens)


class WordTokenizer(Tokenizer):
    """Whitespace words (the convention of PTB), optionally with punctuation split off.

    Splitting punctuation keeps "movie," and "movie." from being three
    unrelated words, which matters on small raw-text corpora.
    """

    kind = "word"
    _words_and_punctuation = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]+")

    def __init__(self, lowercase: bool = False, split_punctuation: bool = False) -> None:
        super().__init__(lowercase)
        self.split_punctuation = split_punctuation

    def tokenize(self, text: str) -> List[str]:
        text = self.normalize(text)
        return self._words_and_punctuation.findall(text) if self.split_punctuation else text.split()

    def detokenize(self, tokens: Iterable[str]) -> str:
        return " ".join(tokens)


class SentencePieceTokenizer(Tokenizer):
    kind = "sentencepiece"

    def __init__(self, model: bytes, lowercase: bool = False) -> None:
        super().__init__(lowercase)
        import sentencepiece as spm

        self.model = model
        self.processor = spm.SentencePieceProcessor(model_proto=model)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, model_type: str, lowercase: bool) -> "SentencePieceTokenizer":
        import sentencepiece as spm

        buffer = io.BytesIO()
        lines = (t.lower() if lowercase else t for t in texts if t and t.strip())
        try:
            spm.SentencePieceTrainer.train(
                sentence_iterator=lines,
                model_writer=buffer,
                vocab_size=vocab_size,
                model_type=model_type,
                character_coverage=1.0,
                hard_vocab_limit=False,  # a small corpus may not support vocab_size pieces
                remove_extra_whitespaces=False,
                minloglevel=2,
                num_threads=1,  # deterministic
                input_sentence_size=2_000_000,  # bounds memory on large corpora (a seeded sample)
                shuffle_input_sentence=True,
            )
        except RuntimeError as exc:
            raise NlptkError(f"data.tokenizer: sentencepiece training failed: {' '.join(str(exc).split())}; try a smaller vocab_size") from None
        return cls(buffer.getvalue(), lowercase)

    def tokenize(self, text: str) -> List[str]:
        return self.processor.encode(self.normalize(text), out_type=str)

    def detokenize(self, tokens: Iterable[str]) -> str:
        return self.processor.decode_pieces(list(tokens))

    def save(self, folder: Path) -> None:
        from nlptoolkit.checkpoint import atomic_write_bytes

        atomic_write_bytes(Path(folder) / SPM_FILE, self.model)


def build_tokenizer(config: "object", train_texts: Optional[Iterable[str]] = None) -> Tokenizer:
    """Make the tokenizer a recipe's ``data.tokenizer`` asks for, training it if needed."""
    if config.kind == "char":
        return CharTokenizer(config.lowercase)
    if config.kind == "word":
        return WordTokenizer(config.lowercase, config.split_punctuation)
    if train_texts is None:
        raise ValueError("sentencepiece needs training texts")
    return SentencePieceTokenizer.train(train_texts, config.vocab_size, config.model_type, config.lowercase)


def load_tokenizer(config: "object", folder: Path) -> Tokenizer:
    """The tokenizer of a finished run."""
    if config.kind != "sentencepiece":
        return build_tokenizer(config)
    path = Path(folder) / SPM_FILE
    if not path.is_file():
        raise NlptkError(f"{path}: the run's sentencepiece model is missing; the run folder is incomplete, train again")
    return SentencePieceTokenizer(path.read_bytes(), config.lowercase)
