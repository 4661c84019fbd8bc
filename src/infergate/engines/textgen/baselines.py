"""What plain transformers gives on the same model and prompts: the yardsticks of ``infergate bench engine``.

Each baseline generates exactly ``new_tokens`` per prompt (``min_new_tokens`` keeps EOS from ending one
early) and reports tokens and seconds, prefill included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from infergate.engines.textgen.loader import LoadedModel

__all__ = ["SHAPES", "Measure", "hf_continuous", "hf_serial", "hf_static", "random_model"]

# Model shapes for machines without the packaged model (a GPU host): random weights, the real sizes.
SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": {
        "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "vocab_size": 49152, "max_position_embeddings": 8192, "tie_word_embeddings": True,
    },
    "llama-1.1b": {
        "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 22, "num_attention_heads": 32,
        "num_key_value_heads": 4, "vocab_size": 32000, "max_position_embeddings": 2048,
    },
}  # fmt: skip


@dataclass(frozen=True)
class Measure:
    tokens: int
    seconds: float
    peak_mb: float = 0.0

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def random_model(shape: str, device: str, dtype: str) -> LoadedModel:
    """A Llama model of a named shape with random weights, and a byte-level stand-in tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from infergate.engines.textgen.loader import choose_dtype

    config = LlamaConfig(**SHAPES[shape], bos_token_id=1, eos_token_id=2)
    model = LlamaForCausalLM(config)
    model.to(device=device, dtype=choose_dtype(dtype, device))  # type: ignore[call-arg]
    model.eval()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=_byte_tokenizer(), bos_token="<s>", eos_token="</s>")
    return LoadedModel(model=model, tokenizer=tokenizer, device=device)


def _byte_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab.update({ch: i + 3 for i, ch in enumerate(sorted(alphabet))})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _encode(loaded: LoadedModel, prompts: list[str]) -> list[list[int]]:
    return [list(loaded.tokenizer(p).input_ids) for p in prompts]


@torch.inference_mode()
def hf_serial(loaded: LoadedModel, prompts: list[str], new_tokens: int) -> Measure:
    """``generate()`` one request after another."""
    model, total = loaded.model, 0
    start = time.perf_counter()
    for ids in _encode(loaded, prompts):
        out = model.generate(
            torch.tensor([ids], device=loaded.device),
            max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0,
        )  # fmt: skip
        total += out.shape[1] - len(ids)
    _sync(loaded.device)
    return Measure(total, time.perf_counter() - start)


@torch.inference_mode()
def hf_static(loaded: LoadedModel, prompts: list[str], new_tokens: int) -> Measure:
    """One ``generate()`` over all prompts, left-padded into one static batch."""
    tok = loaded.tokenizer
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    batch = tok(prompts, return_tensors="pt", padding=True).to(loaded.device)
    start = time.perf_counter()
    out = loaded.model.generate(
        **batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    _sync(loaded.device)
    return Measure((out.shape[1] - batch["input_ids"].shape[1]) * len(prompts), time.perf_counter() - start)


@torch.inference_mode()
def hf_continuous(loaded: LoadedModel, prompts: list[str], new_tokens: int) -> Measure:
    """transformers' own continuous batching (``generate_batch``)."""
    from transformers import GenerationConfig

    config = GenerationConfig(
        max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0,
    )  # fmt: skip
    start = time.perf_counter()
    results = loaded.model.generate_batch(inputs=_encode(loaded, prompts), generation_config=config, progress_bar=False)
    _sync(loaded.device)
    total = sum(len(r.generated_tokens) for r in results.values())
    return Measure(total, time.perf_counter() - start)
