"""Tiny models with random weights, built from configs and saved to directories, for tasks whose real models do
not ship as packages (`../shared/models.md`): the server loads them through the same path as a real model.
Their answers are random but well-formed; tests check shapes, labels, parameters and determinism."""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a is of and to in i my name you like love hate paris france capital city live where do what "
    "sarah john london good bad happy sad movie food it was great terrible today weather sunny rain "
    "hello world this that with for on at by from summary text long short . , ? !"
).split()


def _tokenizer(directory: Path) -> None:
    """A BERT-style WordPiece tokenizer over WORDS (lower-cased, [CLS] A [SEP] B [SEP])."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tk = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tk.normalizer = normalizers.BertNormalizer(lowercase=True)
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tk.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tk.decoder = decoders.WordPiece()
    special = {"unk_token": "[UNK]", "pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]"}
    BertTokenizerFast(tokenizer_object=tk, mask_token="[MASK]", **special).save_pretrained(directory)


def _encoder_config(labels: list[str] | None = None) -> object:
    from transformers import BertConfig

    extra = {"id2label": dict(enumerate(labels)), "label2id": {x: i for i, x in enumerate(labels)}} if labels else {}
    return BertConfig(
        vocab_size=len(WORDS) + 5,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        **extra,
    )


def build(task: str, directory: Path) -> Path:
    """Save a tiny random model for ``task`` (a pipeline tag) with its tokenizer into ``directory``."""
    import torch
    from transformers import (
        BartConfig,
        BartForConditionalGeneration,
        BertForMaskedLM,
        BertForQuestionAnswering,
        BertForSequenceClassification,
        BertForTokenClassification,
    )

    torch.manual_seed(0)
    directory.mkdir(parents=True, exist_ok=True)
    _tokenizer(directory)
    model: torch.nn.Module
    if task == "fill-mask":
        model = BertForMaskedLM(_encoder_config())  # type: ignore[arg-type]
    elif task == "text-classification":
        model = BertForSequenceClassification(_encoder_config(["NEGATIVE", "POSITIVE"]))  # type: ignore[arg-type]
    elif task == "zero-shot-classification":
        labels = ["contradiction", "neutral", "entailment"]
        model = BertForSequenceClassification(_encoder_config(labels))  # type: ignore[arg-type]
    elif task == "token-classification":
        labels = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
        model = BertForTokenClassification(_encoder_config(labels))  # type: ignore[arg-type]
    elif task == "question-answering":
        model = BertForQuestionAnswering(_encoder_config())  # type: ignore[arg-type]
    elif task in ("summarization", "translation", "text2text-generation"):
        config = BartConfig(
            vocab_size=len(WORDS) + 5,
            d_model=32,
            encoder_layers=1,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=128,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
            decoder_start_token_id=2,
            forced_eos_token_id=3,
        )
        model = BartForConditionalGeneration(config)
        with torch.no_grad():  # random weights repeat a special token; favour words, so answers are text
            model.final_logits_bias[0, :5] = -100.0
    else:
        raise ValueError(f"no tiny model for {task}")
    model.save_pretrained(directory)  # type: ignore[operator]
    return directory
