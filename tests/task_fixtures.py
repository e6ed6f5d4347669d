"""Tiny offline models, tokenizers and data files for the task tests (no download anywhere)."""

from __future__ import annotations

import json
import os
from typing import Iterable

from tasks.tiny import TINY, roberta_tokenizer, tiny_esm_dir, tiny_mbart_dir, tiny_roberta_dir  # noqa: F401


def write_jsonl(path: str, rows: Iterable[dict]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return path


def csqa_rows(n: int) -> list[dict]:
    """CommonsenseQA's official record layout."""
    return [{"answerKey": "ABCDE"[i % 5], "id": f"q{i}",
             "question": {"question_concept": "bank", "stem": f"Where is money kept {i}?",
                          "choices": [{"label": lab, "text": text} for lab, text in
                                      zip("ABCDE", ["bank", "library", "store", "mall", "park"])]}}
            for i in range(n)]


def winogrande_rows(n: int) -> list[dict]:
    return [{"qID": f"w{i}", "sentence": "The cup did not fit in the bag because the _ was too big.",
             "option1": "cup", "option2": "bag", "answer": "12"[i % 2]} for i in range(n)]


def write_race_dir(root: str, docs_per_level: int = 2) -> str:
    """RACE's release layout: RACE/{train,dev,test}/{middle,high}/N.txt, one JSON document per file."""
    for split in ("train", "dev", "test"):
        for level in ("middle", "high"):
            folder = os.path.join(root, split, level)
            os.makedirs(folder, exist_ok=True)
            for k in range(docs_per_level):
                doc = {"id": f"{level}{k}.txt", "article": "Tom has a red ball and a blue kite.",
                       "questions": ["What colour is the ball?", "Tom has a _ kite."],
                       "options": [["red", "blue", "green", "black"], ["red", "blue", "big", "small"]],
                       "answers": ["A", "B"]}
                with open(os.path.join(folder, f"{k}.txt"), "w", encoding="utf-8") as handle:
                    json.dump(doc, handle)
    return root


def write_fasta(path: str, sequences: Iterable[str]) -> str:
    with open(path, "w", encoding="utf-8") as handle:
        for i, seq in enumerate(sequences, 1):
            handle.write(f">Sequence {i}\n{seq[:30]}\n{seq[30:]}\n")
    return path


def protein_sequences(n: int, motif: str) -> list[str]:
    return [(motif * 12)[: 20 + (i % 7)] + "MKVL"[i % 4] * 3 for i in range(n)]


TRANSLATION_PAIRS = [
    ("the cat sleeps", "die katze schläft"), ("the dog runs", "der hund läuft"),
    ("a bird sings", "ein vogel singt"), ("the sun shines", "die sonne scheint"), ("and", "und"),
]
