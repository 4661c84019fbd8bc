"""EmbeddingEngine: sentence-transformers models behind the gateway, with requests batched on one thread.

Requests queue up while the model encodes; the worker takes every waiting request (up to ``max_batch_inputs``
inputs) into one ``encode`` call, so concurrent callers share the forward passes. Options that differ per
request (normalization, dimensions) are applied to each request's vectors after the shared pass; prompts are
prepended as sentence-transformers does; a request whose caller left is dropped before it runs.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from infergate.core.engine import EngineState, EngineStats
from infergate.core.errors import GenerationError, OverloadedError, ShuttingDownError, ValidationError
from infergate.core.outputs import Embeddings
from infergate.core.requests import EmbedRequest
from infergate.engines.lifecycle import ModelLoad
from infergate.engines.sources import resolve_source

__all__ = ["EmbeddingEngine", "load_sentence_transformer"]

log = logging.getLogger(__name__)

_DEFAULT_LOAD_ESTIMATE_S = 5.0


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
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[list[float]]] = field(repr=False)


class EmbeddingEngine:
    tasks = frozenset({"feature-extraction", "sentence-similarity"})

    def __init__(
        self,
        model_id: str,
        source: str,
        *,
        max_waiting: int = 64,
        max_batch_inputs: int = 64,
        threads: int | None = None,
        loader: Any = load_sentence_transformer,
    ) -> None:
        self.model_id = model_id
        self.source = source
        self.compute_type = "cpu"
        self._max_waiting = max_waiting
        self._max_batch = max_batch_inputs
        self._threads = threads
        self._loader = loader
        self._model: Any = None
        self._max_tokens = 0
        self._life = ModelLoad(model_id, source, self._load, _DEFAULT_LOAD_ESTIMATE_S)
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._running = 0  # inputs in the batch being encoded
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._life.status != "idle":
            return
        self._stopping = False
        self._life.begin()
        threading.Thread(target=self._loop, name=f"embed:{self.model_id}", daemon=True).start()

    def stop(self, timeout: float = 5.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._life.stopped()

    def _load(self) -> str:
        model = self._loader(self.source, self._threads)
        self._max_tokens = int(model.max_seq_length or model.tokenizer.model_max_length)
        self.compute_type = "gpu" if str(model.device).startswith("cuda") else "cpu"
        self._model = model
        with self._cond:
            self._cond.notify()
        return str(model.device)

    def state(self) -> EngineState:
        return self._life.state()

    def stats(self) -> EngineStats:
        return EngineStats(active=self._running, waiting=len(self._queue))

    async def wait_ready(self, timeout: float) -> None:
        await self._life.wait(timeout)
        self._check_ready()

    def _check_ready(self) -> Any:
        self._life.check()
        if self._stopping or self._model is None:
            raise ShuttingDownError()
        return self._model

    # -- requests ----------------------------------------------------------------------------------------
    async def embed(self, request: EmbedRequest) -> Embeddings:
        model = self._check_ready()
        texts, tokens = await asyncio.to_thread(self._prepare, model, request)
        loop = asyncio.get_running_loop()
        job = _Job(texts, request, loop, loop.create_future())
        with self._cond:
            if self._stopping:
                raise ShuttingDownError()
            if len(self._queue) >= self._max_waiting:
                raise OverloadedError()
            self._queue.append(job)
            self._cond.notify()
        try:
            vectors = await job.future
        finally:
            if not job.future.done():
                job.future.cancel()  # the worker skips it
        return Embeddings(vectors, tokens)

    async def similarity(self, source: str, sentences: list[str]) -> tuple[list[float], int]:
        if not sentences:
            raise ValidationError("`inputs.sentences` must be a non-empty list of strings")
        out = await self.embed(EmbedRequest(inputs=(source, *sentences), normalize=False))
        model = self._model
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

    # -- the worker (its own thread) ---------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not (self._queue and self._model is not None):
                    self._cond.wait()
                if self._stopping:
                    leftover = list(self._queue)
                    self._queue.clear()
                    break
                batch: list[_Job] = []
                size = 0
                while self._queue and (not batch or size + len(self._queue[0].texts) <= self._max_batch):
                    job = self._queue.popleft()
                    if not job.future.cancelled():
                        batch.append(job)
                        size += len(job.texts)
                self._running = size
            try:
                self._encode(batch)
            except Exception as exc:  # one bad batch fails its requests, never the worker
                log.exception("encoding failed on %s", self.model_id)
                for job in batch:
                    _settle(job, GenerationError(f"{type(exc).__name__}: {exc}"))
            finally:
                self._running = 0
        for job in leftover:
            _settle(job, ShuttingDownError())

    def _encode(self, batch: list[_Job]) -> None:
        import torch

        texts = [t for job in batch for t in job.texts]
        with torch.inference_mode():
            vectors = self._model.encode(texts, batch_size=32, convert_to_tensor=True, normalize_embeddings=False)
        start = 0
        for job in batch:
            part = vectors[start : start + len(job.texts)].float()
            start += len(job.texts)
            if job.request.dimensions is not None:
                part = part[:, : job.request.dimensions]
            if job.request.normalize:
                part = torch.nn.functional.normalize(part, p=2, dim=1)
            _settle(job, part.cpu().tolist())


def _settle(job: _Job, outcome: list[list[float]] | BaseException) -> None:
    def apply() -> None:
        if job.future.done():
            return
        if isinstance(outcome, BaseException):
            job.future.set_exception(outcome)
        else:
            job.future.set_result(outcome)

    job.loop.call_soon_threadsafe(apply)
