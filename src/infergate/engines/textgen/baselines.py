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

__all__ = [
    "SHAPES",
    "Measure",
    "hf_continuous",
    "hf_serial",
    "hf_static",
    "llamacpp_batched",
    "llamacpp_single",
    "random_model",
]

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
    decode_tok_s: float = 0.0  # tokens/s of the decode steps alone, where prefill is timed apart

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


# -- llama.cpp's own ways of running a GGUF (the yardsticks of the llama.cpp runner) ---------------------------
def llamacpp_single(path: str, prompts: list[str], new_tokens: int, threads: int | None = None) -> Measure:
    """llama-cpp-python's ``Llama`` completing one prompt after another, greedy (its usual single-user path)."""
    import os

    from llama_cpp import Llama

    threads = threads or len(os.sched_getaffinity(0))
    llm = Llama(path, n_ctx=2048, n_threads=threads, flash_attn=True, verbose=False)  # as llama.cpp's CPU default
    llm(prompts[0], max_tokens=4, temperature=0.0)  # warm-up
    total = 0
    start = time.perf_counter()
    for prompt in prompts:
        out = llm(prompt, max_tokens=new_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0, stop=[])
        total += out["usage"]["completion_tokens"]  # type: ignore[index]
    seconds = time.perf_counter() - start
    llm.close()
    return Measure(total, seconds)


def llamacpp_batched(path: str, prompts: list[str], new_tokens: int, threads: int | None = None) -> Measure:
    """llama.cpp's batched decode (its ``batched`` example): every prompt in one ``llama_decode``, then one
    token per sequence per ``llama_decode``, greedy."""
    import os

    import llama_cpp as lc
    import numpy as np

    lc.llama_backend_init()
    model = lc.llama_model_load_from_file(path.encode(), lc.llama_model_default_params())
    vocab = lc.llama_model_get_vocab(model)
    n_vocab = lc.llama_vocab_n_tokens(vocab)
    encoded = []
    for prompt in prompts:
        data = prompt.encode()
        buf = (lc.llama_token * (len(data) + 8))()
        n = lc.llama_tokenize(vocab, data, len(data), buf, len(buf), True, True)
        encoded.append(list(buf[:n]))
    params = lc.llama_context_default_params()
    params.n_ctx = sum(len(ids) for ids in encoded) + len(prompts) * new_tokens + 256
    params.n_batch = params.n_ubatch = max(512, sum(len(ids) for ids in encoded))
    params.n_seq_max = len(prompts)
    params.n_threads = params.n_threads_batch = threads or len(os.sched_getaffinity(0))
    params.kv_unified = True
    params.no_perf = True
    ctx = lc.llama_init_from_model(model, params)
    batch = lc.llama_batch_init(params.n_batch, 0, 1)

    def decode(items: list[tuple[int, int, int, bool]]) -> list[int]:
        for k, (seq, token, pos, want) in enumerate(items):
            batch.token[k], batch.pos[k], batch.n_seq_id[k], batch.logits[k] = token, pos, 1, want
            batch.seq_id[k][0] = seq
        batch.n_tokens = len(items)
        if lc.llama_decode(ctx, batch) != 0:
            raise RuntimeError("llama_decode failed")
        wanted = sum(1 for *_, want in items if want)
        logits = np.ctypeslib.as_array(lc.llama_get_logits(ctx), shape=(wanted, n_vocab))
        return [int(i) for i in logits.argmax(axis=1)]

    try:
        start = time.perf_counter()
        items = [(s, t, p, p == len(ids) - 1) for s, ids in enumerate(encoded) for p, t in enumerate(ids)]
        last = decode(items)
        prefilled = time.perf_counter()
        for step in range(new_tokens - 1):
            last = decode([(s, last[s], len(ids) + step, True) for s, ids in enumerate(encoded)])
        end = time.perf_counter()
    finally:
        lc.llama_batch_free(batch)
        lc.llama_free(ctx)
        lc.llama_model_free(model)
    tokens = new_tokens * len(prompts)
    return Measure(tokens, end - start, decode_tok_s=len(prompts) * (new_tokens - 1) / (end - prefilled))
