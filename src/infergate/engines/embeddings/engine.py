"""EmbeddingEngine: sentence-transformers models behind the gateway, with requests batched on one thread.

Requests queue up while the model encodes; the worker takes every waiting request (up to ``max_batch_inputs``
inputs) into one ``encode`` call, so concurrent callers share the forward passes. Options that differ per
request (normalization, dimensions) are applied to each request's vectors after the shared pass; prompts are
prepended as sentence-transformers does.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from infergate.core.errors import ValidationError
from infergate.core.outputs import Embeddings
from infergate.core.requests import EmbedRequest
from infergate.core.tasks import EMBEDDING_TASKS
from infergate.engines.base import WorkerEngine
from infergate.engines.pool import ModelPool
from infergate.engines.sources import resolve_source

__all__ = ["EmbeddingEngine", "load_sentence_transformer"]


def load_sentence_transformer(source: str, threads: int | None) -> Any:
    import torch
    from sentence_transformers import SentenceTransformer

    if threads:
        torch.set_num_threads(threads)
    location, _ = resolve_source(source)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return SentenceTransformer(location, device=device)


@dataclass
class _Job:
    texts: list[str]  # prompts prepended, truncated as asked
    request: EmbedRequest


class EmbeddingEngine(WorkerEngine):
    tasks = EMBEDDING_TASKS

    def __init__(
        self,
        model_id: str,
        source: str,
        *,
        max_waiting: int = 64,
        max_batch_inputs: int = 64,
        threads: int | None = None,
        loader: Any = load_sentence_transformer,
        pool: ModelPool | None = None,
    ) -> None:
        super().__init__(
            model_id, source, estimate_s=5.0, max_batch=max_batch_inputs, max_waiting=max_waiting, pool=pool
        )
        self._threads = threads
        self._loader = loader
        self._max_tokens = 0

    def _build(self) -> tuple[Any, str]:
        model = self._loader(self.source, self._threads)
        self._max_tokens = int(model.max_seq_length or model.tokenizer.model_max_length)
        return model, str(model.device)

    def _modules(self, model: Any) -> list[Any]:
        return [model]

    # -- requests ----------------------------------------------------------------------------------------
    async def embed(self, request: EmbedRequest) -> Embeddings:
        model = self._check_ready()
        texts, tokens = await asyncio.to_thread(self._prepare, model, request)
        vectors = await self._worker.submit(_Job(texts, request), units=len(texts))
        return Embeddings(vectors, tokens)

    async def similarity(self, source: str, sentences: list[str]) -> tuple[list[float], int]:
        if not sentences:
            raise ValidationError("`inputs.sentences` must be a non-empty list of strings")
        model = self._check_ready()
        out = await self.embed(EmbedRequest(inputs=(source, *sentences), normalize=False))
        scores = await asyncio.to_thread(self._scores, model, out.vectors)
        return scores, out.tokens

    @staticmethod
    def _scores(model: Any, vectors: list[list[float]]) -> list[float]:
        import torch

        matrix = torch.tensor(vectors)
        return [float(x) for x in model.similarity(matrix[:1], matrix[1:])[0]]

    def _prepare(self, model: Any, request: EmbedRequest) -> tuple[list[str], int]:
        """Prompts prepended, lengths checked (or truncated), and the tokens counted."""
        prefix = ""
        if request.prompt_name is not None:
            prompts: dict[str, str] = model.prompts or {}
            if request.prompt_name not in prompts:
                known = ", ".join(sorted(prompts)) or "none"
                raise ValidationError(
                    f"`prompt_name` {request.prompt_name!r} is not one of this model's prompts ({known}); "
                    "leave it out or use one of those"
                )
            prefix = prompts[request.prompt_name]
        dim = model.get_embedding_dimension()
        if request.dimensions is not None and not 1 <= request.dimensions <= dim:
            raise ValidationError(f"`dimensions` must be between 1 and {dim} for {self.model_id}")
        tokenizer = model.tokenizer
        texts = [prefix + t for t in request.inputs]
        ids = tokenizer(texts, add_special_tokens=True)["input_ids"]
        limit = self._max_tokens
        out, total = [], 0
        for text, tok in zip(texts, ids, strict=True):
            if len(tok) > limit:
                if not request.truncate:
                    raise ValidationError(
                        f"`inputs` must have less than {limit} tokens. Given: {len(tok)}. "
                        'Send shorter inputs, or `"truncate": true` to cut them to the model\'s length'
                    )
                if request.truncation_direction == "left":  # keep the end: drop tokens from the start
                    body = tokenizer(text, add_special_tokens=False)["input_ids"]
                    text = tokenizer.decode(body[-(limit - 2) :])
                # right: sentence-transformers cuts at max_seq_length itself
            total += min(len(tok), limit)
            out.append(text)
        return out, total

    # -- on the worker thread ----------------------------------------------------------------------------
    def _run_batch(self, batch: list[_Job]) -> list[Any]:
        """One ``encode`` over every job's inputs; each job's options applied to its own rows."""
        import torch

        model = self._loaded_model()
        texts = [t for job in batch for t in job.texts]
        with torch.inference_mode():
            vectors = model.encode(texts, batch_size=32, convert_to_tensor=True, normalize_embeddings=False)
        out: list[Any] = []
        start = 0
        for job in batch:
            part = vectors[start : start + len(job.texts)].float()
            start += len(job.texts)
            if job.request.dimensions is not None:
                part = part[:, : job.request.dimensions]
            if job.request.normalize:
                part = torch.nn.functional.normalize(part, p=2, dim=1)
            out.append(part.cpu().tolist())
        return out
