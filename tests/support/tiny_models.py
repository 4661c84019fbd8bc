"""Tiny models with random weights, built from configs and saved to directories, for tasks whose real models do
not ship as packages (`../shared/models.md`): the server loads them through the same path as a real model.
Their answers are random but well-formed; tests check shapes, labels, parameters and determinism."""

from __future__ import annotations

from pathlib import Path

WORDS = (
    "the a is of and to in i my name you like love hate paris france capital city live where do what "
    "sarah john london good bad happy sad movie food it was great terrible today weather sunny rain "
    "hello world this that with for on at by from summary text long short dark gothic misty night beach blurry "
    "cat . , ? !"
).split()


def _tokenizer(directory: Path, max_length: int = 128) -> None:
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
    tokenizer = BertTokenizerFast(tokenizer_object=tk, mask_token="[MASK]", model_max_length=max_length, **special)
    tokenizer.save_pretrained(directory)


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


def build_text_to_image(directory: Path) -> Path:
    """A Stable Diffusion pipeline of tiny random parts (UNet, VAE, CLIP text encoder, a word-level tokenizer,
    PNDM scheduler), saved as a diffusers directory; it draws a 64x64 image in well under a second."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import BertTokenizerFast, CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )
    text_config = CLIPTextConfig(
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
        hidden_size=16,
        intermediate_size=32,
        num_attention_heads=2,
        num_hidden_layers=2,
        vocab_size=len(WORDS) + 5,
        max_position_embeddings=77,
    )
    # The text side only needs ids: the WordPiece tokenizer of the other tiny models, cut at CLIP's 77.
    _tokenizer(directory / "tokenizer-files", max_length=77)
    tokenizer = BertTokenizerFast.from_pretrained(directory / "tokenizer-files")
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=CLIPTextModel(text_config),
        tokenizer=tokenizer,
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(directory / "pipeline")
    return directory / "pipeline"


CODE_LLAMA_TOKENS = ("<PRE>", "<SUF>", "<MID>", "<EOT>")


def build_code_llama(directory: Path) -> Path:
    """A tiny random Llama whose tokenizer has Code Llama's infill tokens as special tokens (text-generation)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    _tokenizer(directory, max_length=256)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    tokenizer.add_special_tokens({"additional_special_tokens": list(CODE_LLAMA_TOKENS)})
    tokenizer.save_pretrained(directory)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


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
