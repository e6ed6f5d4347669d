"""Tiny random checkpoints built offline from configs: the README's demo model and the tests' models.

Real runs use the paper's Hub checkpoints; these exist so that every task runs end to end on a machine
with no download, through the same `from_pretrained` path a Hub checkpoint takes.

    python -m tasks.tiny --output out/tiny-roberta   # a RoBERTa encoder + BPE tokenizer fitted to MAWPS
"""

from __future__ import annotations

import argparse
import csv
import os
from typing import Iterable

from tokenizers import ByteLevelBPETokenizer
from transformers import (
    EsmConfig,
    EsmForMaskedLM,
    EsmForSequenceClassification,
    EsmTokenizer,
    MBart50Tokenizer,
    MBartConfig,
    MBartForConditionalGeneration,
    RobertaConfig,
    RobertaForMaskedLM,
    RobertaForMultipleChoice,
    RobertaModel,
    RobertaTokenizer,
)

from .protein import ESM_ALPHABET

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def roberta_tokenizer(texts: Iterable[str], path: str, vocab_size: int = 400) -> RobertaTokenizer:
    """A byte-level BPE trained on `texts`, wrapped as the real RoBERTa tokenizer class."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    os.makedirs(path, exist_ok=True)
    bpe.save_model(path)
    with open(os.path.join(path, "merges.txt"), encoding="utf-8") as handle:
        merges = [tuple(line.split()) for line in handle if line.strip() and not line.startswith("#")]
    tokenizer = RobertaTokenizer(vocab=bpe.get_vocab(), merges=merges)
    tokenizer.save_pretrained(path)
    return tokenizer


def tiny_roberta_dir(path: str, texts: Iterable[str], head: str = "multiple_choice", vocab_size: int = 400,
                     **sizes) -> str:
    """A saved tiny RoBERTa (`head`: multiple_choice, masked_lm, or encoder) and its tokenizer, as a local
    checkpoint."""
    tokenizer = roberta_tokenizer(texts, path, vocab_size)
    config = RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=160, pad_token_id=1,
                           **{**TINY, **sizes})
    classes = {"multiple_choice": RobertaForMultipleChoice, "masked_lm": RobertaForMaskedLM, "encoder": RobertaModel}
    model = classes[head](config)
    model.save_pretrained(path)
    return path


def tiny_esm_dir(path: str, num_labels: int = 2, pretrained: bool = False) -> str:
    """A saved tiny ESM classifier with the real 33-token ESM alphabet; `pretrained`: a masked LM instead, as the
    Hub's ESM checkpoints are (a task then adds its own head)."""
    os.makedirs(path, exist_ok=True)
    vocab_file = os.path.join(path, "vocab.txt")
    with open(vocab_file, "w", encoding="utf-8") as handle:
        handle.write("\n".join(ESM_ALPHABET) + "\n")
    EsmTokenizer(vocab_file).save_pretrained(path)
    config = EsmConfig(vocab_size=len(ESM_ALPHABET), pad_token_id=1, mask_token_id=32, max_position_embeddings=80,
                       position_embedding_type="absolute", num_labels=num_labels, **TINY)
    (EsmForMaskedLM if pretrained else EsmForSequenceClassification)(config).save_pretrained(path)
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


def main(argv=None) -> str:
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    default_texts = os.path.join(here, "data", "arithmetic", "cv_mawps", "fold0", "train.csv")
    parser = argparse.ArgumentParser(description="Write a tiny random RoBERTa encoder checkpoint for demos.")
    parser.add_argument("--output", required=True)
    parser.add_argument("--texts", default=default_texts, help="CSV with a Question column to fit the tokenizer")
    parser.add_argument("--hidden_size", type=int, default=64)
    parser.add_argument("--num_hidden_layers", type=int, default=2)
    opts = parser.parse_args(argv)
    if not os.path.isfile(opts.texts):
        raise SystemExit(f"{opts.texts}: not found (pass --texts, a CSV file with a Question column)")
    with open(opts.texts, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or "Question" not in rows[0]:
        raise SystemExit(f"{opts.texts}: no Question column")
    path = tiny_roberta_dir(opts.output, [r["Question"] for r in rows], head="encoder", vocab_size=1000,
                            hidden_size=opts.hidden_size, num_hidden_layers=opts.num_hidden_layers,
                            num_attention_heads=4, intermediate_size=4 * opts.hidden_size)
    print(f"tiny RoBERTa encoder written to {path}")
    return path


if __name__ == "__main__":
    main()
