"""BatchRunner: transformers models on PyTorch, the engine's runner for everything but GGUF on a CPU.

One call runs a contiguous range of cache rows, each with its own tokens (left-padded to the longest):
a decode step is every running row with one token; a prefill step is a chunk of one or more prompts. The
model runs through transformers' own modules with :func:`slot_attention` as its attention, so the keys and
values land in each sequence's row of the :class:`SlotCache` and nothing is copied per step.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import AttentionInterface

from infergate.engines.memory import module_bytes
from infergate.engines.textgen.kvslots import ATTENTION_NAME, Batch, SlotCache, slot_attention
from infergate.engines.textgen.loader import LoadedModel, load_causal_lm
from infergate.engines.textgen.packed import pack_linears
from infergate.engines.textgen.rows import RowInput

__all__ = ["BatchRunner", "load_torch_runner"]

AttentionInterface.register(ATTENTION_NAME, slot_attention)


def load_torch_runner(source: str, threads: int | None, dtype: str, max_rows: int, kv_bytes: int) -> BatchRunner:
    return BatchRunner(load_causal_lm(source, threads, dtype))


class BatchRunner:
    name = "torch"
    mixed_batches = False  # a prompt padded beside decode rows would round differently in 16-bit attention
    length_step = 128
    # Measured on the CPU in float32: a row continued from a copied prefix of any length gives the logits of the
    # row that computed it all, bit for bit unless the cut leaves a 1-token chunk (3e-5 then, as between a batch
    # and a lone row: the engine's standard is the same text, logprobs within 1e-4).
    exact_step = 1

    def __init__(self, loaded: LoadedModel) -> None:
        self.model = loaded.model
        self.device = loaded.device
        self.tokenizer = loaded.tokenizer
        config = self.model.config
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        self.context_length: int | None = getattr(text, "max_position_embeddings", None)
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos_ids)
        heads = text.num_attention_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
        kv_heads = getattr(text, "num_key_value_heads", None) or heads
        dtype = next(p.dtype for p in self.model.parameters() if p.is_floating_point())
        self.cache = SlotCache(text.num_hidden_layers, kv_heads, head_dim, dtype, self.device)
        self.model.set_attn_implementation(ATTENTION_NAME)
        if self.device == "cpu" and torch.backends.mkldnn.is_available():
            pack_linears(self.model)
        # A decode step never runs fewer rows than this: a lone row takes other matrix kernels than a batch
        # (packed float32 and plain bfloat16 alike), and its greedy text would then depend on being alone.
        self.min_rows = 2

    def weight_bytes(self) -> int:
        return module_bytes(self.model)

    def held_tokens(self) -> int | None:
        return None  # the slot cache has no lengths of its own: the engine's count is the truth

    def close(self) -> None:
        self.cache.resize(0, 0, 0, 0)
        self.model = None

    @torch.inference_mode()
    def forward(self, first: int, rows: list[RowInput | None]) -> list[torch.Tensor | None]:
        """Run rows ``first .. first+len(rows)-1``; a None row runs padding only (its output is None).

        Returns, per row, the float32 logits of its last token ([vocab]), or of every token ([n, vocab])
        when the row asked for all of them. The cache must already hold room for every position written.
        """
        width = max(len(r.tokens) for r in rows if r is not None)
        trash = self.cache.trash
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        write = torch.full((len(rows), width), trash, dtype=torch.long)
        pos = torch.full((len(rows), width), -1, dtype=torch.long)
        length = 1
        for i, row in enumerate(rows):
            if row is None:
                continue
            n = len(row.tokens)
            ids[i, width - n :] = torch.tensor(row.tokens)
            span = torch.arange(row.start, row.start + n)
            write[i, width - n :] = span
            pos[i, width - n :] = span
            length = max(length, row.start + n)
        keep_all = any(r is not None and r.all_logits for r in rows)
        batch = Batch(first, len(rows), width, write.to(self.device), pos.to(self.device), length)
        with self.cache.run(batch):
            out = self.model(
                input_ids=ids.to(self.device),
                position_ids=pos.clamp(min=0).to(self.device),
                use_cache=False,
                logits_to_keep=0 if keep_all else 1,
            )
        logits: Any = out.logits.float()
        result: list[torch.Tensor | None] = []
        for i, row in enumerate(rows):
            if row is None:
                result.append(None)
            elif row.all_logits:
                result.append(logits[i, width - len(row.tokens) :])
            else:
                result.append(logits[i, -1])
        return result
