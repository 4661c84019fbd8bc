"""TextGenEngine: requests in from the event loop, tokens out, the model run on a thread of its own.

Continuous batching. The step loop (``_loop``) owns every sequence. Each iteration it admits waiting requests
(higher priority first, then arrival order) while there is a free row and room in the KV cache budget, runs
one chunk of prompt tokens for the sequences still prefilling (at most ``prefill_chunk`` tokens, so a long
prompt never stalls the others for long), then one decode step for every other sequence in one batched
forward. A finished, failed or abandoned sequence leaves at the next iteration and its cache row is reused.
When running sequences outgrow the cache budget, the newest lowest-priority one is preempted: it gives its
row back, waits at the head of its priority, and recomputes its tokens when readmitted.

Prefix reuse. A sequence about to compute its prompt from the start first looks for those tokens already
computed: in the prefix cache (``prefix.py``: what sequences that left had computed) or in another running
sequence's row, and starts from a copy of the longest such prefix. A sequence whose prompt an older one is
computing right now waits for it rather than computing the same tokens beside it, so 16 requests with one
system prompt compute it once. Only positions computed as prompt chunks are reused, cut at a multiple of the
runner's ``exact_step``: the rest is then computed exactly as without the copy, and the output does not change.
An answer is generated a token at a time, which the runners compute slightly differently from a prompt; so when
a sequence finishes, its tokens are queued to be computed once more as a prompt ("warming", when rows are free
and no request waits; a request that needs the row ends it), and the next turn of the conversation finds its
whole history computed exactly.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Iterable
from dataclasses import replace
from typing import Any

from infergate.core.engine import EngineState, EngineStats, ModelLimits, TokenSpan
from infergate.core.errors import (
    GenerationError,
    InfergateError,
    OverloadedError,
    ShuttingDownError,
    ValidationError,
)
from infergate.core.outputs import PromptInfo, StepEvent
from infergate.core.params import StoppingParams
from infergate.core.requests import GenerationRequest
from infergate.core.tasks import TEXT_GENERATION
from infergate.engines.lifecycle import ModelLoad
from infergate.engines.memory import return_freed_memory
from infergate.engines.pool import ModelPool
from infergate.engines.textgen import infill, tools
from infergate.engines.textgen.choice import RunnerLoader, choose_runner, runner_loader
from infergate.engines.textgen.constrain import GrammarCompiler
from infergate.engines.textgen.prefix import BLOCK, Entry, PrefixCache, common_prefix
from infergate.engines.textgen.rows import ModelRunner, RowInput
from infergate.engines.textgen.sequence import Outbox, Sequence, Vocabulary
from infergate.engines.textgen.stopping import StopMatcher
from infergate.observability.instruments import EngineMetrics

__all__ = ["TextGenEngine"]

log = logging.getLogger(__name__)

_DEFAULT_LOAD_ESTIMATE_S = 20.0
_CAPACITY_STEP = 128  # cache rows grow in whole steps of positions, so a resize is rare
# An idle engine frees its KV cache after this long, not at once: llama.cpp makes a new context to grow it again
# (0.15 s for 16 x 1,024 positions here), which the next message of a chat would otherwise wait for.
_FREE_IDLE_CACHE_S = 10.0


def _round_up(n: int, step: int = _CAPACITY_STEP) -> int:
    return -(-n // step) * step


def _check_ids(ids: list[int], vocab_size: int) -> None:
    """Token ids sent as the prompt must be the model's."""
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise ValidationError(
            f"`prompt` holds the token id {bad}, which is not in this model's vocabulary (0 to {vocab_size - 1})",
            param="prompt",
        )


class TextGenEngine:
    tasks = frozenset({TEXT_GENERATION})

    def __init__(
        self,
        model_id: str,
        source: str,
        *,
        max_active: int = 16,
        max_waiting: int = 64,
        threads: int | None = None,
        max_total_tokens: int | None = None,
        dtype: str = "auto",
        kv_cache_mb: int = 512,
        prefill_chunk: int = 128,
        prefix_cache_mb: int = 256,
        loader: RunnerLoader | None = None,
        pool: ModelPool | None = None,
        infill_format: str = "auto",
        runner: str = "auto",
        max_grammar_kb: int = 64,
        metrics: EngineMetrics | None = None,
    ) -> None:
        """``metrics``: where the step loop observes queue times and decode batch sizes (None: nowhere)."""
        self.model_id = model_id
        self.source = source
        self.compute_type = "cpu"
        # "torch" or "llama.cpp": decided before loading (GGUF on a CPU-only machine -> llama.cpp), shown in
        # GET /v1/models; a catalog entry may insist on one.
        self.runner = choose_runner(runner, source) if loader is None else "torch"
        self.last_used = 0.0
        self._max_active = max_active
        self._max_waiting = max_waiting
        self._threads = threads
        self._max_total_override = max_total_tokens
        self._dtype = dtype
        self._kv_cache_bytes = kv_cache_mb * 1024 * 1024
        self._prefill_chunk = prefill_chunk
        self._prefix = PrefixCache(prefix_cache_mb * 1024 * 1024)
        self._loader = loader or runner_loader(self.runner)
        self._life = ModelLoad(model_id, source, self._load, _DEFAULT_LOAD_ESTIMATE_S, pool, self)
        self._runner: ModelRunner | None = None
        self._vocab: Vocabulary | None = None
        self._infill: infill.InfillFormat | None = None
        self._infill_setting = infill_format
        self._max_grammar_bytes = max_grammar_kb * 1024
        self._grammars: GrammarCompiler | None = None
        self._budget_tokens = 0  # rows x positions the KV cache may hold
        self._step = _CAPACITY_STEP
        self._limits = ModelLimits(max_total_tokens=max_total_tokens or 0, max_input_tokens=0)
        self._cond = threading.Condition()
        self._waiting: list[tuple[int, int, Sequence]] = []  # heap of (-priority, order, seq)
        self._rows: list[Sequence] = []  # admitted sequences; index = cache row
        self._warming: deque[Sequence] = deque(maxlen=max_active)  # finished answers to compute again as prompts
        self._stopping = False
        self._cached_tokens = 0  # for the metrics, counted on the engine's thread after each step
        self._outbox = Outbox()  # filled and flushed by the step loop only
        self._loop_thread: threading.Thread | None = None
        self._idle_since = 0.0  # when the last sequence left (monotonic)
        self._metrics = metrics

    # -- lifecycle ---------------------------------------------------------------------------------------
    def start(self) -> None:
        """Load the model in the background; requests get ModelLoadingError until it is ready."""
        if self._life.status != "idle":
            return
        self._stopping = False
        self._life.begin()
        if self._loop_thread is None or not self._loop_thread.is_alive():  # one loop, across reloads
            self._loop_thread = threading.Thread(target=self._loop, name=f"textgen:{self.model_id}", daemon=True)
            self._loop_thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """End every waiting and running request with ShuttingDownError and stop the step loop."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._loop_thread is not None:
            self._loop_thread.join(timeout)
        self._life.stopped()

    def unload(self, reason: str | None = None) -> None:
        """Free the model (the memory pool calls this only when no sequence runs or waits)."""
        with self._cond:
            if self._runner is not None:
                self._runner.close()
            self._runner = self._vocab = None
            self._prefix.clear()
            self._warming.clear()
            self._life.unloaded(reason)
        return_freed_memory()

    def memory_bytes(self) -> int:
        """The weights, plus the KV cache budget the sequences may fill."""
        runner = self._runner
        return runner.weight_bytes() + self._kv_cache_bytes + self._prefix.stats.bytes if runner is not None else 0

    def _load(self) -> str:
        runner = self._loader(self.source, self._threads, self._dtype, self._max_active, self._kv_cache_bytes)
        try:
            self._install(runner)
        except BaseException:
            runner.close()
            raise
        return f"{runner.device}, {runner.name}"

    def _install(self, runner: ModelRunner) -> None:
        tok = runner.tokenizer
        self._budget_tokens = self._kv_cache_bytes // runner.cache.bytes_per_token
        self._step = runner.length_step
        # One sequence must always fit in the cache on its own, so the context is what the budget holds.
        fits = self._up(self._budget_tokens - self._step) - self._step
        if fits < 64:
            raise ValueError(
                f"engine.kv_cache_mb ({self._kv_cache_bytes >> 20}) holds only {self._budget_tokens} tokens of "
                f"{self.model_id}; raise it to at least {(512 * runner.cache.bytes_per_token >> 20) + 1}"
            )
        total = self._max_total_override or runner.context_length or 2048
        total = min(total, fits)
        self._limits = ModelLimits(max_total_tokens=total, max_input_tokens=total - 1)
        eos_ids = set(runner.eos_ids)
        vocabulary = tok.get_vocab()
        self._infill = infill.choose(self._infill_setting, vocabulary)
        if self._infill is not None and self._infill.end in vocabulary:
            eos_ids.add(vocabulary[self._infill.end])  # Code Llama's <EOT> ends an infill
        self._vocab = Vocabulary(
            tokenizer=tok,
            size=runner.vocab_size,
            special_ids=frozenset(tok.all_special_ids),
            eos_ids=frozenset(eos_ids),
        )
        self.compute_type = "gpu" if runner.device == "cuda" else "cpu"
        self._prefix.clear()  # saved caches of another load mean nothing to this one
        self._grammars = GrammarCompiler(tok, runner.vocab_size, eos_ids, self._max_grammar_bytes)
        self._runner = runner

    # -- queries -----------------------------------------------------------------------------------------
    def state(self) -> EngineState:
        return self._life.state()

    def stats(self) -> EngineStats:
        return EngineStats(
            active=len(self._rows),
            waiting=len(self._waiting),
            cached_tokens=self._cached_tokens,
            prefix=replace(self._prefix.stats),
            grammars_compiled=self._grammars.compiled if self._grammars is not None else 0,
            load_s=self._life.loaded_s,
        )

    def limits(self) -> ModelLimits:
        return self._limits

    async def wait_ready(self, timeout: float) -> None:
        await self._life.wait(timeout)
        self._check_ready()

    def _check_ready(self) -> ModelRunner:
        runner = self._life.require(self._runner, self._stopping)
        self.last_used = time.monotonic()
        return runner

    # -- tokenizer services ------------------------------------------------------------------------------
    async def render_chat(
        self,
        messages: list[dict[str, Any]],
        add_generation_prompt: bool = True,
        tool_list: tuple[dict[str, Any], ...] = (),
    ) -> str:
        """The conversation as the model's chat template writes it, with ``tool_list`` presented to the model
        (by the template when it takes tools in the format parsed here, else in a system message)."""
        tok = self._check_ready().tokenizer
        if not tok.chat_template:
            raise ValidationError(
                f"model {self.model_id} has no chat template; send a prompt you format yourself to "
                f"POST /models/{self.model_id}"
            )
        own = tools.template_takes_tools(tok.chat_template)
        messages = tools.prepare_messages(messages, tool_list, own)
        extra: dict[str, Any] = {"tools": list(tool_list)} if own and tool_list else {}
        try:
            rendered = tok.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
            )
            return str(rendered)
        except Exception as exc:  # jinja errors: the messages do not fit this model's template
            raise ValidationError(
                f"the chat template of {self.model_id} rejected the messages: {exc}", param="messages"
            ) from exc

    def infill_format(self) -> str | None:
        return self._infill.name if self._infill is not None else None

    async def infill_prompt(self, prefix: str, suffix: str) -> str:
        self._check_ready()
        if self._infill is None:
            raise ValidationError(
                f"model {self.model_id} has no infill tokens (such as Code Llama's <PRE>/<SUF>/<MID> or "
                "StarCoder's <fim_prefix>), so `suffix` cannot be used; call a code model that has them, or send "
                "the whole prompt without `suffix`",
                param="suffix",
            )
        return self._infill.prompt(prefix, suffix)

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
        if request.prompt_ids is not None:
            ids = list(request.prompt_ids)
            _check_ids(ids, min(loaded.vocab_size, len(loaded.tokenizer)))
        else:
            prompt = request.prompt
            if request.messages is not None:
                prompt = await self.render_chat(
                    list(request.messages), request.add_generation_prompt, self._tools(request)
                )
            elif request.suffix is not None:
                prompt = await self.infill_prompt(request.prompt, request.suffix)
            ids = await asyncio.to_thread(
                lambda: list(loaded.tokenizer(prompt, add_special_tokens=request.add_special_tokens).input_ids)
            )
        ids, max_new = self._fit(ids, request)
        seq = Sequence(request, len(ids), ids, max_new, asyncio.get_running_loop(), asyncio.Queue(), self._outbox)
        await self._constrain(seq)
        with self._cond:
            if self._stopping:
                raise ShuttingDownError()
            if len(self._waiting) >= self._max_waiting and len(self._rows) >= self._max_active:
                raise OverloadedError()
            seq.arrival = time.monotonic()  # its queue time starts now (the grammar is compiled)
            heapq.heappush(self._waiting, (-request.priority, seq.order, seq))
            self._cond.notify()
        try:
            while True:
                item = await seq.mailbox.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, StepEvent) and item.finish_reason is not None:
                    return
                if isinstance(item, PromptInfo) and max_new == 0:  # the prompt only (OpenAI's echo of it)
                    return
        finally:
            seq.cancelled = True  # the step loop drops it (and its KV cache) at the next step

    @staticmethod
    def _tools(request: GenerationRequest) -> tuple[dict[str, Any], ...]:
        return request.tools or () if request.tool_choice.mode != "none" else ()

    async def _constrain(self, seq: Sequence) -> None:
        """Compile the sequence's grammar (or its tool calls'), in a thread: a large schema takes a while, and
        the step loop must not wait for it."""
        assert self._grammars is not None
        request, grammars = seq.request, self._grammars
        if request.grammar is not None:
            seq.grammar = await asyncio.to_thread(grammars.compile, request.grammar)
        listed = self._tools(request)
        if not listed:
            return
        calls = await asyncio.to_thread(grammars.compile, tools.call_grammar(listed, request.tool_choice))
        if request.tool_choice.mode == "auto" and request.tool_choice.name is None:
            seq.call_grammar, seq.opener = calls, StopMatcher((tools.OPEN,), include_stop=False)
        else:
            seq.grammar, seq.call_text = calls, ""

    def _fit(self, ids: list[int], request: GenerationRequest) -> tuple[list[int], int]:
        """Apply ``truncate`` and check the prompt against the context with TGI's messages."""
        limits = self._limits
        if not ids:
            raise ValidationError("`inputs` cannot be empty", param="inputs")
        if request.truncate is not None:
            if request.truncate > limits.max_input_tokens:
                raise ValidationError(
                    f"`truncate` must be strictly positive and less than {limits.max_input_tokens}. "
                    f"Given: {request.truncate}",
                    param="truncate",
                )
            ids = ids[-request.truncate :]
        # TGI's order: the total first, then the prompt alone.
        wanted = request.stopping.max_new_tokens
        if wanted is not None and request.stopping.clamp_to_context:
            wanted = min(wanted, limits.max_total_tokens - len(ids))
        if wanted is not None and len(ids) + wanted > limits.max_total_tokens:
            raise ValidationError(
                f"`inputs` tokens + `max_new_tokens` must be <= {limits.max_total_tokens}. "
                f"Given: {len(ids)} `inputs` tokens and {wanted} `max_new_tokens`",
                param="max_new_tokens",
            )
        if len(ids) > limits.max_input_tokens:
            raise ValidationError(
                f"`inputs` must have less than {limits.max_input_tokens} tokens. Given: {len(ids)}", param="inputs"
            )
        if wanted is None:
            return ids, limits.max_total_tokens - len(ids)  # the gateway sets the server's default before this
        return ids, wanted

    # -- the step loop (engine thread) -------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._rows:
                    if (self._waiting or self._warming) and self._life.ready.is_set():
                        break
                    self._cond.wait(self._free_idle_cache())
                if self._stopping:
                    break
                gone = [s for s in self._rows if s.cancelled]
                self._keep(gone)
                self._remove(gone)
                self._admit()
            if self._runner is not None and self._runner.mixed_batches:
                self._run(self._mixed_step)
            else:
                self._run(self._prefill_step)
                self._run(self._decode_step)
            self._trim()
            self._count_cached()
        with self._cond:
            leftover = [s for _, _, s in self._waiting] + self._rows
            self._waiting.clear()
            self._rows.clear()
            self._warming.clear()
        for seq in leftover:
            seq.post(ShuttingDownError())
        self._outbox.flush()

    def _run(self, step: Any) -> None:
        """Run one forward step; a failure ends the sequences it touched, never the engine."""
        involved: list[Sequence] = []
        try:
            step(involved)
        except Exception as exc:
            if not isinstance(exc, InfergateError):
                log.exception("a forward step failed on %s", self.model_id)
                exc = GenerationError(f"{type(exc).__name__}: {exc}")
            for seq in involved:
                seq.post(exc)
            self._remove(involved)
        finally:
            self._outbox.flush()

    def _admit(self) -> None:
        """Move waiting sequences into free rows, best first, while the cache budget has room (lock held); then,
        when nothing else runs, an answer to warm. A request never waits or runs beside a warming sequence (a
        longer row in the same llama.cpp call moves the others' logits): it ends it, keeping what it computed."""
        warming = [s for s in self._rows if s.warm]
        if self._waiting and warming:
            self._keep(warming)
            self._remove(warming)
        while self._waiting and len(self._rows) < self._max_active:
            seq = self._waiting[0][2]
            if seq.cancelled:
                heapq.heappop(self._waiting)
                continue
            if self._rows and not self._fits(len(self._rows) + 1, len(seq.tokens) + 1):
                return
            heapq.heappop(self._waiting)
            seq.row = len(self._rows)
            self._rows.append(seq)
            if not seq.admitted:  # a preempted sequence's second wait is not a queue time
                seq.admitted = True
                if self._metrics is not None:
                    self._metrics.queue_time.observe(time.monotonic() - seq.arrival)
        if self._warming and not self._rows:
            seq = self._warming.popleft()
            seq.row = len(self._rows)
            self._rows.append(seq)

    def _fits(self, rows: int, length: int) -> bool:
        assert self._runner is not None
        cache = self._runner.cache
        longest = max([length, *(s.cached + 1 for s in self._rows)])
        return max(rows, cache.rows) * (max(self._up(longest), cache.capacity) + 1) <= self._budget_tokens

    def _up(self, n: int) -> int:
        return _round_up(n, self._step)

    def _reserve(self, length: int) -> bool:
        """Make every admitted row able to hold ``length`` positions, preempting sequences if the budget is short.

        True when the runner had to drop the running sequences' caches to make room: they recompute, and the
        step that asked must be planned again."""
        assert self._runner is not None
        cache = self._runner.cache
        rows = len(self._rows)
        if rows <= cache.rows and length <= cache.capacity:
            return False
        capacity = max(cache.capacity, self._up(length))
        while rows > 1 and rows * (capacity + 1) > self._budget_tokens:
            self._preempt()
            rows = len(self._rows)
        # A few spare rows, within the budget, so that the next sequences to join need no resize.
        # At least the runner's minimum, so a lone decoding sequence runs the same kernels as in a batch.
        most = max(self._max_active, self._runner.min_rows)
        alloc = max(rows, min(most, rows + 4, self._budget_tokens // (capacity + 1)))
        return self._resize(alloc, capacity)

    def _resize(self, rows: int, capacity: int) -> bool:
        assert self._runner is not None
        cache = self._runner.cache
        keep_len = min(max((s.cached for s in self._rows), default=0), cache.capacity)
        dropped = cache.resize(rows, capacity, keep=min(len(self._rows), cache.rows), keep_len=keep_len)
        if dropped and self._rows:
            log.info("KV cache reshaped on %s: recomputing %d sequences", self.model_id, len(self._rows))
            for seq in self._rows:
                seq.cached = seq.exact = 0
                seq.forget_prompt_logprobs()
        return dropped

    def _trim(self) -> None:
        """Shrink the cache when the sequences that made it large have gone."""
        assert self._runner is not None
        cache = self._runner.cache
        if not self._rows:
            self._idle_since = time.monotonic()
            return
        needed = self._up(max(s.cached for s in self._rows) + 1)
        if cache.capacity >= 4 * self._step and cache.capacity > 2 * needed:
            self._resize(cache.rows, 2 * needed)

    def _free_idle_cache(self) -> float | None:
        """Free the KV cache once the engine has been idle long enough (lock held); how long to wait until then."""
        runner = self._runner
        if runner is None or not runner.cache.rows:
            return None
        left = self._idle_since + _FREE_IDLE_CACHE_S - time.monotonic()
        if left > 0:
            return left
        runner.cache.resize(0, 0, 0, 0)
        return None

    def _count_cached(self) -> None:
        assert self._runner is not None
        held = self._runner.held_tokens()
        self._cached_tokens = held if held is not None else sum(s.cached for s in self._rows)

    def _preempt(self) -> None:
        """Give the newest lowest-priority sequence's row back; it waits and recomputes later."""
        victim = min(self._rows, key=lambda s: (not s.warm, s.request.priority, -s.order))
        if victim.warm:
            self._remove([victim])
            return
        log.info("KV cache full on %s: preempting a sequence at %d tokens", self.model_id, len(victim.tokens))
        self._keep([victim])  # readmitted, it starts from what it had computed
        self._remove([victim])
        victim.cached = victim.exact = 0
        victim.forget_prompt_logprobs()
        with self._cond:
            heapq.heappush(self._waiting, (-victim.request.priority, victim.order, victim))

    def _remove(self, leaving: Iterable[Sequence]) -> None:
        """Take sequences out of their rows; the last row moves into each hole so rows stay contiguous."""
        assert self._runner is not None
        for seq in sorted(set(leaving), key=lambda s: -s.row):
            if seq.row < 0:
                continue
            self._runner.cache.release(seq.row)
            last = self._rows.pop()
            if last is not seq:
                self._runner.cache.move_row(last.row, seq.row, last.cached)
                last.row = seq.row
                self._rows[seq.row] = last
            seq.row = -1

    def _prefill_step(self, involved: list[Sequence]) -> None:
        """Prompt (or recompute) tokens for the sequences that have them, oldest first, within the chunk budget.

        Each sequence runs in a forward of its own, in chunks that start at multiples of ``prefill_chunk``:
        the same prompt is computed the same way alone or among others, so greedy output does not depend on
        what else is running (a padded batch of prompts would change the rounding of bfloat16 attention).
        """
        assert self._runner is not None
        chosen, reuse = self._prompt_chunks()
        if not chosen:
            return
        involved += [s for s, _ in chosen]
        if self._reserve(max(len(s.tokens) + 1 for s, _ in chosen)):  # the whole prompt: one resize, not one a chunk
            return
        missed = self._reuse(reuse)
        finished: list[Sequence] = []
        for seq, n in chosen:
            if seq.row < 0 or seq in missed:
                continue  # preempted to make room, or its chunk was counted from a prefix it could not copy
            logits = self._runner.forward(seq.row, [self._prompt_row(seq, n)])[0]
            if self._after_prompt_chunk(seq, n, logits):
                finished.append(seq)
        self._finish(finished)

    def _decode_step(self, involved: list[Sequence]) -> None:
        """One token for every sequence that is decoding, in one batched forward."""
        assert self._runner is not None
        ready = self._decoding()
        if not ready:
            return
        involved += ready
        if self._reserve(max(s.cached + 1 for s in ready)):
            return
        ready = [s for s in ready if s.row >= 0]
        first = min(s.row for s in ready)
        last = max(s.row for s in ready)
        short = self._runner.min_rows - (last - first + 1)
        if short > 0 and self._runner.cache.rows >= self._runner.min_rows:  # pad with rows that only write trash
            last = min(last + short, self._runner.cache.rows - 1)
            first = last - self._runner.min_rows + 1
        inputs: list[RowInput | None] = [None] * (last - first + 1)
        for seq in ready:
            inputs[seq.row - first] = RowInput([seq.tokens[-1]], seq.cached)
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(ready))
        outputs = self._runner.forward(first, inputs)
        finished = [seq for seq in ready if self._after_token(seq, outputs[seq.row - first])]
        self._finish(finished)

    def _mixed_step(self, involved: list[Sequence]) -> None:
        """The prompt chunks and every decoding sequence's next token in one forward, for runners whose rows
        are computed the same way in any company (llama.cpp): one pass over the weights instead of several."""
        assert self._runner is not None
        (chosen, reuse), ready = self._prompt_chunks(), self._decoding()
        if not chosen and not ready:
            return
        involved += [s for s, _ in chosen] + ready
        if self._reserve(max([len(s.tokens) + 1 for s, _ in chosen] + [s.cached + 1 for s in ready])):
            return
        missed = self._reuse(reuse)
        chosen = [(s, n) for s, n in chosen if s.row >= 0 and s not in missed]
        ready = [s for s in ready if s.row >= 0]
        if not chosen and not ready:
            return
        rows = [s.row for s, _ in chosen] + [s.row for s in ready]
        first = min(rows)
        inputs: list[RowInput | None] = [None] * (max(rows) - first + 1)
        for seq, n in chosen:
            inputs[seq.row - first] = self._prompt_row(seq, n)
        for seq in ready:
            inputs[seq.row - first] = RowInput([seq.tokens[-1]], seq.cached)
        if self._metrics is not None:
            self._metrics.batch_size.observe(len(rows))
        outputs = self._runner.forward(first, inputs)
        finished = [seq for seq, n in chosen if self._after_prompt_chunk(seq, n, outputs[seq.row - first])]
        finished += [seq for seq in ready if self._after_token(seq, outputs[seq.row - first])]
        self._finish(finished)

    def _prompt_chunks(self) -> tuple[list[tuple[Sequence, int]], dict[Sequence, tuple[Entry | Sequence | None, int]]]:
        """The sequences with prompt tokens to run this step, oldest first, and how many each, within the budget;
        and for those starting from scratch, where their longest computed prefix is (applied by :meth:`_reuse`
        once the cache has room; the chunk counts from its end)."""
        chunk = self._prefill_chunk
        budget = chunk
        chosen: list[tuple[Sequence, int]] = []
        reuse: dict[Sequence, tuple[Entry | Sequence | None, int]] = {}
        for seq in sorted(self._rows, key=lambda s: (s.warm, s.order)):
            if seq.started and seq.pending == 1:
                continue  # decoding
            start, source = seq.cached, None
            looks = start == 0 and self._prefix.enabled and not seq.wants_prompt_logprobs
            if looks:
                source, start, wait = self._find_prefix(seq)
                if wait:
                    continue  # an older sequence is computing what this one would: take it from there later
            n = min(len(seq.tokens) - start, chunk - start % chunk)
            if chosen and n > budget:
                break
            if looks:
                reuse[seq] = (source, start)
            chosen.append((seq, n))
            budget -= n
        return chosen, reuse

    def _find_prefix(self, seq: Sequence) -> tuple[Entry | Sequence | None, int, bool]:
        """The longest exactly computed prefix of ``seq``'s tokens (but the last), cut at the runner's exact step:
        a prefix-cache entry or another row, and its length. The flag says to wait instead: an older sequence is
        computing, as its own prompt, more of these tokens than can be found now."""
        assert self._runner is not None
        step = self._runner.exact_step
        tokens = seq.tokens[: len(seq.tokens) - 1]  # one token at least runs, for the logits of the next
        salt = seq.request.cache_salt
        source: Entry | Sequence | None
        source, found = self._prefix.find(tokens, salt)
        coming = 0
        for other in self._rows:
            if other is seq or other.request.cache_salt != salt:
                continue
            shared = common_prefix(other.tokens, tokens)
            if shared < BLOCK:
                continue
            if min(shared, other.exact) > found:
                source, found = other, min(shared, other.exact)
            if other.order < seq.order and not other.started:
                coming = max(coming, min(shared, other.prompt_len))
        found -= found % step
        wait = coming - coming % step > max(found, 0) and coming - found >= BLOCK
        return (source if found else None), found, wait

    def _reuse(self, reuse: dict[Sequence, tuple[Entry | Sequence | None, int]]) -> set[Sequence]:
        """Start sequences from the prefixes :meth:`_prompt_chunks` found (the cache has room for them now).
        Returns those whose prefix could no longer be copied: their chunk, counted from its end, waits a step
        (a chunk cut elsewhere than the engine's own chunking would compute its tokens slightly differently)."""
        assert self._runner is not None
        cache = self._runner.cache
        missed: set[Sequence] = set()
        for seq, (source, length) in reuse.items():
            if seq.row < 0 or seq.cached:
                continue
            done = 0
            if isinstance(source, Sequence):
                if source.row >= 0 and source.exact >= length:
                    cache.copy_row(source.row, seq.row, length)
                    done = length
            elif source is not None and source.saved is not None:
                if cache.load(seq.row, source.saved, length):
                    self._prefix.touch(source)
                    done = length
                else:  # saved in a context of another shape (llama.cpp, after a long request)
                    self._prefix.forget(source)
            seq.cached = seq.exact = seq.reused = done
            if done < length:
                missed.add(seq)
            elif not seq.warm:
                self._prefix.record(len(seq.tokens) - 1, done)
        return missed

    def _keep(self, leaving: list[Sequence]) -> None:
        """Save what leaving sequences computed as prompts into the prefix cache (before their rows are freed)."""
        assert self._runner is not None
        if not self._prefix.enabled:
            return
        cache = self._runner.cache
        step = self._runner.exact_step
        for seq in leaving:
            length = seq.exact - seq.exact % step
            if seq.row < 0 or length < BLOCK:
                continue
            tokens, salt = seq.tokens[:length], seq.request.cache_salt
            if self._prefix.wants(tokens, length * cache.bytes_per_token, salt):
                saved, nbytes = cache.save(seq.row, length)
                self._prefix.insert(tokens, saved, nbytes, salt)

    def _finish(self, finished: list[Sequence]) -> None:
        """Sequences that ended: keep what they computed, queue their answers to warm, free their rows."""
        assert self._runner is not None
        self._keep(finished)
        step = self._runner.exact_step
        for seq in finished:
            if self._prefix.enabled and not seq.warm and seq.generated and len(seq.tokens) // step > seq.exact // step:
                warm = replace(seq.request, stopping=StoppingParams(max_new_tokens=0), prefill_details=False)
                self._warming.append(
                    Sequence(warm, len(seq.tokens), list(seq.tokens), 0, seq.loop, asyncio.Queue(), warm=True)
                )
        self._remove(finished)

    def _decoding(self) -> list[Sequence]:
        return [s for s in self._rows if s.started and s.pending == 1 and not s.cancelled]

    @staticmethod
    def _prompt_row(seq: Sequence, n: int) -> RowInput:
        return RowInput(seq.tokens[seq.cached : seq.cached + n], seq.cached, seq.wants_prompt_logprobs)

    def _after_prompt_chunk(self, seq: Sequence, n: int, logits: Any) -> bool:
        """Record a prompt chunk's logits; at the prompt's end, the first token. True when the sequence ended."""
        assert logits is not None and self._vocab is not None
        if seq.wants_prompt_logprobs:
            seq.record_prompt_logprobs(seq.cached, logits)
            logits = logits[-1]
        if seq.exact == seq.cached:
            seq.exact += n
        seq.cached += n
        if seq.pending:
            return False
        if not seq.started:
            seq.begin(self._vocab)
            if seq.max_new_tokens == 0:
                return True  # the prompt only: no token is generated
        return seq.advance(logits, self._vocab)

    def _after_token(self, seq: Sequence, logits: Any) -> bool:
        assert logits is not None and self._vocab is not None
        seq.cached += 1
        return seq.advance(logits, self._vocab)
