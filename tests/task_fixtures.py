"""Tiny offline models, tokenizers and data files for the task tests (no download anywhere)."""

from __future__ import annotations

import json
import os
from typing import Iterable

from tokenizers import ByteLevelBPETokenizer
from transformers import (
    EsmConfig,
    EsmForSequenceClassification,
    EsmTokenizer,
    MBart50Tokenizer,
    MBartConfig,
    MBartForConditionalGeneration,
    RobertaConfig,
    RobertaForMultipleChoice,
    RobertaModel,
    RobertaTokenizer,
)

from tasks.protein import ESM_ALPHABET

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def roberta_tokenizer(texts: Iterable[str], path: str) -> RobertaTokenizer:
    """A byte-level BPE trained on `texts`, wrapped as the real RoBERTa tokenizer class."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=400, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    os.makedirs(path, exist_ok=True)
    bpe.save_model(path)
    with open(os.path.join(path, "merges.txt"), encoding="utf-8") as handle:
        merges = [tuple(line.split()) for line in handle if line.strip() and not line.startswith("#")]
    tokenizer = RobertaTokenizer(vocab=bpe.get_vocab(), merges=merges)
    tokenizer.save_pretrained(path)
    return tokenizer


def tiny_roberta_dir(path: str, texts: Iterable[str], head: str = "multiple_choice") -> str:
    """A saved tiny RoBERTa (multiple-choice head, or bare encoder) and its tokenizer, as a local checkpoint."""
    tokenizer = roberta_tokenizer(texts, path)
    config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=160, pad_token_id=1, **TINY)
    model = RobertaForMultipleChoice(config) if head == "multiple_choice" else RobertaModel(config)
    model.save_pretrained(path)
    return path


def tiny_esm_dir(path: str, num_labels: int = 2) -> str:
    """A saved tiny ESM classifier with the real 33-token ESM alphabet."""
    os.makedirs(path, exist_ok=True)
    vocab_file = os.path.join(path, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as handle:
        handle.write("\n".join(ESM_ALPHABET) + "\n")
    EsmTokenizer(vocab_file).save_pretrained(path)
    config = EsmConfig(vocab_size=len(ESM_ALPHABET), pad_token_id=1, mask_token_id=32, max_position_embeddings=80,
                       position_embedding_type="absolute", num_labels=num_labels, **TINY)
    EsmForSequenceClassification(config).save_pretrained(path)
    return path


def tiny_mbart_dir(path: str, texts: Iterable[str]) -> str:
    """A saved tiny mBART with a real `MBart50Tokenizer` over the words of `texts` (unigram vocabulary)."""
    words = sorted({w for t in texts for w in t.split()})
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [("\u2581" + w, -1.0) for w in words]
    tokenizer = MBart50Tokenizer(vocab=vocab, src_lang="en_XX", tgt_lang="de_DE")
    tokenizer.save_pretrained(path)
    config = MBartConfig(
        vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
    )
    MBartForConditionalGeneration(config).save_pretrained(path)
    return path


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
