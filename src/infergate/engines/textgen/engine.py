"""TextGenEngine: requests in from the event loop, tokens out, the model run on a thread of its own.

The step loop (``_loop``) owns every sequence's state. Each step it admits waiting requests (higher
priority first, then arrival order) up to ``max_active``, then advances every active sequence by one token,
so concurrent requests all make progress and stream together. Each sequence keeps its own KV cache, so a
greedy request gives the same text alone or among others. The engine issue replaces the per-sequence forward
with batched forwards; the interface (an async stream per request, abort by leaving it) stays.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any

from infergate.core.engine import EngineState, EngineStats, ModelLimits, TokenSpan
from infergate.core.errors import (
    GenerationError,
    InfergateError,
    ModelLoadFailedError,
    ModelLoadingError,
    OverloadedError,
    ShuttingDownError,
    ValidationError,
)
from infergate.core.outputs import PromptInfo, StepEvent, Token
from infergate.core.requests import GenerationRequest
from infergate.engines.textgen.detokenize import IncrementalDetokenizer
from infergate.engines.textgen.loader import LoadedModel, load_causal_lm
from infergate.engines.textgen.runner import ModelRunner
from infergate.engines.textgen.sampling import TokenChooser
from infergate.engines.textgen.stopping import StopMatcher

__all__ = ["TextGenEngine"]

log = logging.getLogger(__name__)

_RELOAD_AFTER_S = 30.0  # a failed load is retried by the first request after this long
_DEFAULT_LOAD_ESTIMATE_S = 20.0


@dataclass(eq=False)
class _Sequence:
    """One request's state; touched by the step loop only, except ``cancelled``."""

    request: GenerationRequest
    prompt_ids: list[int]
    max_new_tokens: int
    loop: asyncio.AbstractEventLoop
    mailbox: asyncio.Queue[Any]
    cancelled: bool = False
    cache: Any = None
    last_token: int = -1
    generated: int = 0
    chooser: TokenChooser | None = None
    detok: IncrementalDetokenizer | None = None
    stopper: StopMatcher | None = None
    arrival: float = field(default_factory=time.monotonic)

    def post(self, item: object) -> None:
        try:
            self.loop.call_soon_threadsafe(self.mailbox.put_nowait, item)
        except RuntimeError:  # the event loop is gone (shutdown): nobody is listening any more
            self.cancelled = True


class TextGenEngine:
    def __init__(
        self,
        model_id: str,
        source: str,
        *,
        max_active: int = 8,
        max_waiting: int = 64,
        threads: int | None = None,
        default_max_tokens: int = 1024,
        max_total_tokens: int | None = None,
        loader: Any = load_causal_lm,
    ) -> None:
        self.model_id = model_id
        self.source = source
        self.compute_type = "cpu"
        self._max_active = max_active
        self._max_waiting = max_waiting
        self._threads = threads
        self._default_max_tokens = default_max_tokens
        self._max_total_override = max_total_tokens
        self._loader = loader
        self._status = "idle"  # idle: not started (models that load on first use)
        self._error: str | None = None
        self._load_started = 0.0
        self._last_load_s = _DEFAULT_LOAD_ESTIMATE_S
        self._loaded: LoadedModel | None = None
        self._runner: ModelRunner | None = None
        self._limits = ModelLimits(max_total_tokens=max_total_tokens or 0, max_input_tokens=0)
        self._special_ids: frozenset[int] = frozenset()
        self._eos_ids: frozenset[int] = frozenset()
        self._vocab_size = 0
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int, _Sequence]] = []  # heap of (-priority, order, seq)
        self._order = itertools.count()
        self._active: list[_Sequence] = []
        self._stopping = False
        self._ready = threading.Event()
        self._loop_thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the model in the background; requests get ModelLoadingError until it is ready."""
        if self._status != "idle":
            return
        self._stopping = False
        self._begin_load()
        self._loop_thread = threading.Thread(target=self._loop, name=f"textgen:{self.model_id}", daemon=True)
        self._loop_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End every waiting and running request with ShuttingDownError and stop the step loop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout)
        self._status = "stopped"

    def _begin_load(self) -> None:
        self._status = "loading"
        self._error = None
        self._load_started = time.monotonic()
        threading.Thread(target=self._load, name=f"load:{self.model_id}", daemon=True).start()

    def _load(self) -> None:
        try:
            loaded = self._loader(self.source, self._threads)
            self._install(loaded)
        except Exception as exc:  # any failure to load is reported to requests, never raised in the server
            log.exception("loading %s from %s failed", self.model_id, self.source)
            self._error = f"{type(exc).__name__}: {exc}"
            self._status = "failed"
            return
        self._last_load_s = time.monotonic() - self._load_started
        self._status = "ready"
        self._ready.set()
        log.info("model %s ready in %.1f s on %s", self.model_id, self._last_load_s, loaded.device)

    def _install(self, loaded: LoadedModel) -> None:
        tok, config = loaded.tokenizer, loaded.model.config
        total = self._max_total_override or getattr(config, "max_position_embeddings", None) or 2048
        self._limits = ModelLimits(max_total_tokens=total, max_input_tokens=total - 1)
        self._special_ids = frozenset(tok.all_special_ids)
        eos = loaded.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
        if tok.eos_token_id is not None:
            eos_ids.add(tok.eos_token_id)
        self._eos_ids = frozenset(eos_ids)
        self._vocab_size = loaded.model.get_output_embeddings().weight.shape[0]
        self.compute_type = "gpu" if loaded.device == "cuda" else "cpu"
        self._loaded = loaded
        self._runner = ModelRunner(loaded)

    # -- queries -----------------------------------------------------------------------------------------
    def state(self) -> EngineState:
        estimate = max(0.5, self._last_load_s - (time.monotonic() - self._load_started))
        if self._status == "idle":
            return EngineState("idle", None, self._last_load_s)
        return EngineState(self._status, self._error, estimate if self._status == "loading" else 0.0)

    def stats(self) -> EngineStats:
        return EngineStats(active=len(self._active), waiting=len(self._waiting))

    def limits(self) -> ModelLimits:
        return self._limits

    async def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self._status == "loading" and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        self._check_ready()

    def _check_ready(self) -> LoadedModel:
        if self._status == "failed":
            if time.monotonic() - self._load_started > _RELOAD_AFTER_S:
                error = self._error or "unknown error"
                self._begin_load()
                raise ModelLoadFailedError(self.model_id, error)
            raise ModelLoadFailedError(self.model_id, self._error or "unknown error")
        if self._status in ("loading", "idle"):
            raise ModelLoadingError(self.model_id, self.state().estimated_time)
        if self._status == "stopped" or self._stopping or self._loaded is None:
            raise ShuttingDownError()
        return self._loaded

    # -- tokenizer services ------------------------------------------------------------------------------
    async def render_chat(self, messages: list[dict[str, Any]], add_generation_prompt: bool = True) -> str:
        tok = self._check_ready().tokenizer
        if not tok.chat_template:
            raise ValidationError(
                f"model {self.model_id} has no chat template; send a prompt you format yourself to "
                f"POST /models/{self.model_id}"
            )
        try:
            return str(tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt))
        except Exception as exc:  # jinja errors: the messages do not fit this model's template
            raise ValidationError(f"the chat template of {self.model_id} rejected the messages: {exc}") from exc

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[TokenSpan]:
        tok = self._check_ready().tokenizer

        def run() -> list[TokenSpan]:
            enc = tok(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
            return [
                TokenSpan(id=i, text=text[a:b], start=a, stop=b)
                for i, (a, b) in zip(enc["input_ids"], enc["offset_mapping"], strict=True)
            ]

        return await asyncio.to_thread(run)

    # -- generation --------------------------------------------------------------------------------------
    async def generate(self, request: GenerationRequest) -> AsyncGenerator[PromptInfo | StepEvent, None]:
        loaded = self._check_ready()
        ids = await asyncio.to_thread(
            lambda: list(loaded.tokenizer(request.prompt, add_special_tokens=request.add_special_tokens).input_ids)
        )
        ids, max_new = self._fit(ids, request)
        seq = _Sequence(request, ids, max_new, asyncio.get_running_loop(), asyncio.Queue())
        with self._cond:
            if self._stopping:
                raise ShuttingDownError()
            if len(self._waiting) >= self._max_waiting and len(self._active) >= self._max_active:
                raise OverloadedError()
            heapq.heappush(self._waiting, (-request.priority, next(self._order), seq))
            self._cond.notify()
        try:
            while True:
                item = await seq.mailbox.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, StepEvent) and item.finish_reason is not None:
                    return
        finally:
            seq.cancelled = True  # the step loop drops it (and its KV cache) at the next step

    def _fit(self, ids: list[int], request: GenerationRequest) -> tuple[list[int], int]:
        """Apply ``truncate`` and check the prompt against the context with TGI's messages."""
        limits = self._limits
        if not ids:
            raise ValidationError("`inputs` cannot be empty")
        if request.truncate is not None:
            if request.truncate > limits.max_input_tokens:
                raise ValidationError(
                    f"`truncate` must be strictly positive and less than {limits.max_input_tokens}. "
                    f"Given: {request.truncate}"
                )
            ids = ids[-request.truncate :]
        # TGI's order: the total first, then the prompt alone.
        wanted = request.stopping.max_new_tokens
        if wanted is not None and request.stopping.clamp_to_context:
            wanted = min(wanted, limits.max_total_tokens - len(ids))
        if wanted is not None and len(ids) + wanted > limits.max_total_tokens:
            raise ValidationError(
                f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. "
                f"Given: {len(ids)} `inputs` tokens and {wanted} `max_new_tokens`"
            )
        if len(ids) > limits.max_input_tokens:
            raise ValidationError(f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {len(ids)}")
        if wanted is None:
            return ids, min(self._default_max_tokens, limits.max_total_tokens - len(ids))
        return ids, wanted

    # -- the step loop (engine thread) -------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._active and not (self._waiting and self._ready.is_set()):
                    self._cond.wait()
                if self._stopping:
                    break
                while self._waiting and len(self._active) < self._max_active:
                    self._active.append(heapq.heappop(self._waiting)[2])
            for seq in list(self._active):
                if seq.cancelled or self._step(seq):
                    self._active.remove(seq)
                    seq.cache = None
        with self._cond:
            leftover = [s for _, _, s in self._waiting] + self._active
            self._waiting.clear()
            self._active.clear()
        for seq in leftover:
            seq.post(ShuttingDownError())

    def _step(self, seq: _Sequence) -> bool:
        """Advance one sequence by one token; True when it is done (finished or failed)."""
        assert self._runner is not None and self._loaded is not None
        try:
            if seq.cache is None:
                return self._prefill(seq)
            logits = self._runner.decode(seq.last_token, seq.cache)
            return self._emit(seq, logits)
        except InfergateError as exc:
            seq.post(exc)
        except Exception as exc:  # a model failure ends this request only, never the engine
            log.exception("generation failed for a request on %s", self.model_id)
            seq.post(GenerationError(f"{type(exc).__name__}: {exc}"))
        return True

    def _prefill(self, seq: _Sequence) -> bool:
        assert self._runner is not None and self._loaded is not None
        req, tok = seq.request, self._loaded.tokenizer
        logits, seq.cache, lps = self._runner.prefill(seq.prompt_ids, req.prefill_details)
        seq.chooser = TokenChooser(req.sampling, seq.prompt_ids, self._vocab_size, req.top_n_tokens)
        seq.detok = IncrementalDetokenizer(tok, seq.prompt_ids)
        seq.stopper = StopMatcher(req.stopping.stop, req.stopping.include_stop_in_output)
        prefill: tuple[Token, ...] = ()
        if req.prefill_details:
            prefill = tuple(
                Token(i, tok.decode([i]), lp, i in self._special_ids) for i, lp in zip(seq.prompt_ids, lps, strict=True)
            )
        seq.post(PromptInfo(len(seq.prompt_ids), seq.chooser.seed, prefill))
        return self._emit(seq, logits)

    def _emit(self, seq: _Sequence, logits: Any) -> bool:
        assert seq.chooser is not None and seq.detok is not None and seq.stopper is not None
        assert self._loaded is not None
        tok = self._loaded.tokenizer
        choice = seq.chooser.choose(logits)
        seq.generated += 1
        seq.last_token = choice.token_id
        special = choice.token_id in self._special_ids
        finish: str | None = None
        text = ""
        if not special:
            text, stopped = seq.stopper.push(seq.detok.push(choice.token_id))
            if stopped:
                finish = "stop_sequence"
        if finish is None and choice.token_id in self._eos_ids and not seq.request.stopping.ignore_eos:
            finish = "eos_token"
        if finish is None and seq.generated >= seq.max_new_tokens:
            finish = "length"
        if finish is not None and finish != "stop_sequence":
            text += seq.stopper.push(seq.detok.flush())[0] + seq.stopper.flush()
        # A token's text is what it adds to the output (TGI's decode_token), or its literal form if special.
        token = Token(choice.token_id, tok.decode([choice.token_id]) if special else text, choice.logprob, special)
        top = tuple(Token(i, tok.decode([i]), lp, i in self._special_ids) for i, lp in choice.top)
        seq.post(StepEvent(seq.generated, token, text, top, finish))
        return finish is not None
