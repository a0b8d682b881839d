"""The tiny model for CI and the demo: a byte-level BPE tokenizer trained on the run's own text and
a two-layer Llama initialised from a config, saved as a model directory. Nothing is downloaded."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

VOCAB_SIZE = 512
PAD, EOS = "<pad>", "</s>"
# Zephyr's role tags as single tokens, so a tiny model's short context is not spent on them.
ROLE_TAGS = ("<|system|>", "<|user|>", "<|assistant|>")


def tiny_tokenizer(texts: Iterable[str], chat_template: str, max_length: int) -> PreTrainedTokenizerFast:
    """A 512-token byte-level BPE tokenizer trained on `texts`, with `chat_template` set."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_SIZE, special_tokens=[PAD, EOS, *ROLE_TAGS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(texts, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=EOS, pad_token=PAD,
                                        model_max_length=max_length)
    tokenizer.chat_template = chat_template
    return tokenizer


def tiny_llama(tokenizer: PreTrainedTokenizerFast, max_length: int, seed: int) -> LlamaForCausalLM:
    """A 2-layer, 64-wide Llama (≈0.15M parameters at 512 tokens) with weights drawn from `seed`."""
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         max_position_embeddings=max_length, bos_token_id=None,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def save_tiny_model(texts: Iterable[str], out_dir: Path, chat_template: str, max_length: int,
                    seed: int) -> Path:
    """Build the tiny tokenizer and model and save both to `out_dir`, a model directory the
    trainers load like any other (DPO needs a path to load its reference model from)."""
    tokenizer = tiny_tokenizer(texts, chat_template, max_length)
    tiny_llama(tokenizer, max_length, seed).save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
