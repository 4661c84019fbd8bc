"""A model served by remote engines (vLLM, TGI, SGLang, llama.cpp's server, another infergate), behind the same
engine seam as a local one: the gateway's limits, cache, usage and priority cannot tell them apart.

Contract of ``generate`` (and of the JSON calls, embeddings): a replica is chosen (``ReplicaSet``); a connection
error, a 5xx, 429 or 503, or a 401/403/404 (a replica that is misconfigured, not a caller at fault) moves the
request to another replica at once, but only before the first token was yielded: after it, a failure ends the
generation with GenerationError (the HTTP layer renders the protocol's error event; the tokens already sent are
billed, because the gateway counted them). A 400/422 is the caller's: it becomes a 422 with the engine's
message and marks nothing. Every replica tried and none took it: UpstreamUnavailableError (503, Retry-After).
Leaving the iterator early closes the upstream connection, which is how every one of these engines learns that
the client left and stops generating.

This is the one module that imports httpx for engines: its exceptions are translated here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from infergate.core.engine import EngineState, EngineStats, ModelLimits, ReplicaStatus, TokenSpan
from infergate.core.errors import ReplicaLostError, UpstreamUnavailableError, ValidationError
from infergate.core.outputs import Embeddings, PromptInfo, StepEvent, Token
from infergate.core.requests import EmbedRequest, GenerationRequest
from infergate.engines.remote import openai_wire, tgi_wire
from infergate.engines.remote.board import Board, LocalBoard
from infergate.engines.remote.openai_wire import Piece
from infergate.engines.remote.replicas import SYNC_S, Replica, ReplicaSet

__all__ = ["RemoteEndpoint", "RemoteEngine"]

log = logging.getLogger(__name__)

# Statuses that say "not this replica, now" rather than "not this request".
_BUSY = {429, 503}
_MISCONFIGURED = {401, 403, 404}
_DEFAULT_CONTEXT = 131_072  # a remote model's context when the catalog names none (the engine checks its own)


@dataclass(frozen=True, slots=True)
class RemoteEndpoint:
    """Where and how to reach a remote model (from its catalog entry; ``api_key`` already read from the
    environment variable the entry names)."""

    urls: tuple[str, ...]
    protocol: str  # "openai" | "tgi" | "infergate"
    remote_model: str
    api_key: str | None = None
    eject_s: float = 5.0
    probe_interval_s: float = 1.0
    connect_timeout_s: float = 2.0
    read_timeout_s: float = 120.0
    affinity_chars: int = 0
    affinity_slack: int = 4


class _ReplicaFailed(Exception):
    """This attempt failed before anything reached the caller: try another replica."""

    def __init__(self, reason: str, *, eject: bool, retry_after_s: float = 0.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.eject = eject
        self.retry_after_s = retry_after_s


@dataclass
class _Attempt:
    replica: Replica
    prompt_tokens: int = 0
    prefill: tuple[Token, ...] = ()
    stop_reason: str | None = None
    started: float = field(default_factory=time.perf_counter)


class RemoteEngine:
    """TextGenerator (task text-generation) or Embedder (feature-extraction, sentence-similarity)."""

    compute_type = "remote"

    def __init__(
        self,
        model_id: str,
        task: str,
        endpoint: RemoteEndpoint,
        *,
        max_total_tokens: int | None = None,
        board: Board | None = None,
    ) -> None:
        self.model_id = model_id
        self.endpoint = endpoint
        embed = task in ("feature-extraction", "sentence-similarity")
        self.tasks = frozenset({task, "feature-extraction", "sentence-similarity"} if embed else {task})
        self.runner = f"remote ({endpoint.protocol})"
        self.replicas = ReplicaSet(
            endpoint.urls,
            eject_s=endpoint.eject_s,
            affinity_chars=endpoint.affinity_chars,
            affinity_slack=endpoint.affinity_slack,
        )
        self._board = board or LocalBoard()
        self._context = max_total_tokens or _DEFAULT_CONTEXT
        headers = {"authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        self._client = httpx.AsyncClient(
            headers=headers,
            timeout=httpx.Timeout(endpoint.read_timeout_s, connect=endpoint.connect_timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        self._probe_timeout = min(2.0, max(1.0, endpoint.probe_interval_s))
        self._loop_task: asyncio.Task[None] | None = None
        self._stopped = False

    # -- ModelEngine -------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start probing and syncing the replicas (needs a running event loop; a no-op once started)."""
        if self._loop_task is None and not self._stopped:
            with contextlib.suppress(RuntimeError):  # no running loop yet: the first request starts it
                self._loop_task = asyncio.get_running_loop().create_task(self._watch())

    def state(self) -> EngineState:
        now = time.monotonic()
        if any(r.available(now) for r in self.replicas.replicas):
            return EngineState("ready")
        errors = "; ".join(f"{r.url}: {r.last_error}" for r in self.replicas.replicas)
        return EngineState("failed", f"no replica is answering ({errors})", self.replicas.soonest_s())

    def stats(self) -> EngineStats:
        return EngineStats(active=sum(r.in_flight for r in self.replicas.replicas), waiting=0)

    async def wait_ready(self, timeout: float) -> None:
        return None  # replicas that do not answer are found (and skipped) per request

    def memory_bytes(self) -> int:
        return 0

    def replica_views(self) -> list[ReplicaStatus]:
        return self.replicas.views()

    async def aclose(self) -> None:
        self._stopped = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await self._client.aclose()
        await self._board.close()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped = True
        if self._loop_task is not None:
            self._loop_task.cancel()

    # -- TextGenerator -----------------------------------------------------------------------------------
    def limits(self) -> ModelLimits:
        return ModelLimits(
            max_total_tokens=self._context,
            max_input_tokens=self._context - 1,
            max_top_n_tokens=20 if self.endpoint.protocol == "openai" else 5,
            max_best_of=4,
        )

    async def tokenize(self, text: str, add_special_tokens: bool = True) -> list[TokenSpan]:
        raise ValidationError(
            f"model {self.model_id} is served by a remote engine; tokenize on the engine itself (TGI and vLLM "
            "serve POST /tokenize)"
        )

    def infill_format(self) -> str | None:
        return None

    async def generate(self, request: GenerationRequest) -> AsyncGenerator[PromptInfo | StepEvent, None]:
        path, body = self._build(request)
        affinity_key = request.prompt or json.dumps(request.messages, sort_keys=True, default=str)
        tried: set[str] = set()
        causes: list[str] = []
        while True:
            replica = self.replicas.choose(affinity_key, tried)
            if replica is None:
                raise UpstreamUnavailableError(self.model_id, causes, self.replicas.soonest_s())
            if tried:
                replica.retries += 1
            tried.add(replica.url)
            attempt = _Attempt(replica)
            pieces = self._stream(attempt, path, body, request.stopping.stop)
            replica.in_flight += 1
            replica.requests += 1
            try:
                try:
                    first = await anext(pieces)
                except _ReplicaFailed as failure:
                    await self._failed(replica, failure)
                    causes.append(f"{replica.url}: {failure.reason}")
                    continue
                except StopAsyncIteration:
                    await self._failed(replica, _ReplicaFailed("the stream ended before any token", eject=True))
                    causes.append(f"{replica.url}: the stream ended before any token")
                    continue
                replica.latency_sum_s += time.perf_counter() - attempt.started
                replica.latency_count += 1
                yield PromptInfo(
                    attempt.prompt_tokens,
                    request.sampling.seed,
                    prefill=attempt.prefill,
                    prefill_pieces=tuple(t.text for t in attempt.prefill),
                )
                async for event in self._events(request, attempt, first, pieces):
                    yield event
                return
            finally:
                replica.in_flight -= 1
                await pieces.aclose()

    def _build(self, request: GenerationRequest) -> tuple[str, dict[str, Any]]:
        protocol, name = self.endpoint.protocol, self.endpoint.remote_model
        if request.suffix is not None:
            raise ValidationError(
                f"`suffix` (fill in the middle) needs the model's infill tokens, and model {self.model_id} is "
                "served by a remote engine whose tokenizer this server does not have; send the infill prompt itself",
                param="suffix",
            )
        if protocol == "openai" or request.messages is not None:
            # A chat goes to the engine's chat route (TGI and infergate serve OpenAI's too): the engine renders
            # it with the model's own template.
            path, body = openai_wire.build_generation(request, name, strict=protocol != "openai")
            if request.cache_salt is not None and protocol != "tgi":  # vLLM's and infergate's (TGI refuses it)
                body["cache_salt"] = request.cache_salt
            if request.grammar is not None and protocol == "tgi":  # TGI's chat takes its own grammar form
                for field in ("response_format", "guided_json", "guided_regex", "guided_grammar"):
                    body.pop(field, None)
                body["response_format"] = tgi_wire.grammar_param(request.grammar)
            return (f"/models/{name}{path}" if protocol == "infergate" else path), body
        return tgi_wire.build_generation(request, f"/models/{name}" if protocol == "infergate" else "")

    async def _events(
        self, request: GenerationRequest, attempt: _Attempt, first: Piece, pieces: AsyncIterator[Piece]
    ) -> AsyncIterator[StepEvent]:
        """Pieces -> StepEvents, numbered from 1. Each token is held until the next piece arrives, because an
        engine may send the finish reason (and, last, the prompt's length) in pieces of their own that belong to
        the last token; a stream that ends without a finish reason was cut."""
        index = 0
        pending: Piece | None = None
        prompt_tokens: int | None = None
        cached_tokens: int | None = None
        stops = request.stopping.stop
        trim = _StopTrim(stops) if stops and not request.stopping.include_stop_in_output else None
        top_n = request.top_n_tokens
        calls = openai_wire.ToolCallDeltas()

        async def everything() -> AsyncIterator[Piece]:
            yield first
            async for piece in pieces:
                yield piece

        try:
            async for piece in everything():
                if piece.prompt_tokens is not None:
                    prompt_tokens, cached_tokens = piece.prompt_tokens, piece.cached_tokens
                calls.add(piece.tool_deltas)
                if piece.token is None and piece.finish_reason is None:
                    continue  # usage only
                if piece.token is None and pending is not None:  # a finish reason for the last token
                    pending = replace(pending, finish_reason=piece.finish_reason, text=pending.text + piece.text)
                    continue
                if pending is not None:
                    index += 1
                    yield self._event(index, pending, trim, None, top_n)
                pending = piece
        except _ReplicaFailed as failure:
            await self._failed(attempt.replica, failure)
            raise ReplicaLostError(
                f"the engine at {attempt.replica.url} failed mid-answer ({failure.reason}); the tokens already "
                "sent are counted. Retry the request"
            ) from None
        if pending is None or pending.finish_reason is None:
            raise ReplicaLostError(
                f"the engine at {attempt.replica.url} ended the answer without a finish reason (cut off); "
                "retry the request"
            )
        pending = self._with_stop(pending, request, attempt.stop_reason)
        event = self._event(index + 1, pending, trim, pending.finish_reason, top_n)
        made = calls.calls()
        if made:  # an engine's calls come whole in the last event, as the local engine sends them
            event = replace(event, finish_reason="tool_calls", tool_calls=made)
        yield replace(event, prompt_tokens=prompt_tokens, cached_tokens=cached_tokens)

    @staticmethod
    def _with_stop(piece: Piece, request: GenerationRequest, stop_reason: str | None) -> Piece:
        """TGI keeps the stop sequence in the text. OpenAI engines drop it; vLLM keeps it when asked
        (`include_stop_str_in_output`, and then says which in `stop_reason`); for others it is added back when the
        request had only one (with several, which one matched is not known)."""
        stopping = request.stopping
        if piece.finish_reason != "stop_sequence" or not stopping.include_stop_in_output or stop_reason is not None:
            return piece
        if len(stopping.stop) != 1 or piece.text.endswith(stopping.stop[0]):
            return piece
        return replace(piece, text=piece.text + stopping.stop[0])

    @staticmethod
    def _event(index: int, piece: Piece, trim: _StopTrim | None, finish: str | None, top_n: int) -> StepEvent:
        token = piece.token or Token(openai_wire.UNKNOWN_TOKEN_ID, "", None)
        text = piece.text if trim is None else trim.feed(piece.text, finish)
        return StepEvent(index, token, text, piece.top[:top_n], finish)

    async def _stream(
        self, attempt: _Attempt, path: str, body: dict[str, Any], stops: Sequence[str]
    ) -> AsyncGenerator[Piece, None]:
        """One attempt's pieces; _ReplicaFailed for what a replica did wrong, ValidationError for the caller's."""
        url = attempt.replica.url + path
        try:
            async with self._client.stream("POST", url, json=body) as response:
                await self._check(response)
                if "x-prompt-tokens" in response.headers:  # infergate says it up front
                    attempt.prompt_tokens = int(response.headers["x-prompt-tokens"])
                if not body.get("stream", path.endswith("generate_stream")):  # TGI /generate (prefill details)
                    payload = json.loads(await response.aread())
                    attempt.prompt_tokens, prefill, answer = tgi_wire.parse_response(payload)
                    attempt.prefill = tuple(prefill)
                    for piece in answer:
                        yield piece
                    return
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue  # comments, `event:` and `id:` lines
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    chunk = json.loads(data)
                    if "error" in chunk and "choices" not in chunk and "token" not in chunk:
                        error = chunk["error"]
                        message = error.get("message") if isinstance(error, dict) else error
                        raise _ReplicaFailed(f"error event: {message}", eject=False)
                    if "token" in chunk:
                        yield tgi_wire.parse_event(chunk)
                        continue
                    attempt.stop_reason = attempt.stop_reason or openai_wire.stop_reason(chunk)
                    for piece in openai_wire.parse_chunk(chunk, tuple(stops)):
                        yield piece
        except httpx.TimeoutException as exc:
            raise _ReplicaFailed(f"timed out ({type(exc).__name__})", eject=True) from None
        except (httpx.TransportError, httpx.DecodingError) as exc:
            raise _ReplicaFailed(f"connection failed ({type(exc).__name__}: {exc})", eject=True) from None
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise _ReplicaFailed(f"answered something unreadable ({type(exc).__name__}: {exc})", eject=True) from None

    async def _check(self, response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        detail = _error_message(await response.aread())
        status = response.status_code
        if status in _BUSY:
            retry_after = _retry_after(response.headers.get("retry-after"))
            raise _ReplicaFailed(f"HTTP {status} ({detail})", eject=False, retry_after_s=retry_after)
        if status in _MISCONFIGURED:
            hint = "check the entry's `api_key_env`" if status in (401, 403) else "check the entry's `remote_model`"
            raise _ReplicaFailed(f"HTTP {status} ({detail}; {hint})", eject=True)
        if status >= 500:
            raise _ReplicaFailed(f"HTTP {status} ({detail})", eject=True)
        raise ValidationError(f"the engine serving {self.model_id} refused the request: {detail}")

    async def _failed(self, replica: Replica, failure: _ReplicaFailed) -> None:
        log.warning("model %s: replica %s failed: %s", self.model_id, replica.url, failure.reason)
        if failure.eject:
            self.replicas.eject(replica, failure.reason)
            await self._board.eject(self.model_id, replica.url, self.endpoint.eject_s, failure.reason)
        else:
            replica.errors += 1
            self.replicas.cool(replica, failure.reason, failure.retry_after_s)

    # -- Embedder ----------------------------------------------------------------------------------------
    async def embed(self, request: EmbedRequest) -> Embeddings:
        if not request.normalize or request.prompt_name is not None:
            name = "normalize: false" if not request.normalize else "prompt_name"
            raise ValidationError(
                f"model {self.model_id} is served by a remote engine through OpenAI's embeddings route, which has "
                f"no {name}; leave it out"
            )
        path, body = openai_wire.build_embeddings(list(request.inputs), self.endpoint.remote_model, request.dimensions)
        if self.endpoint.protocol == "infergate":
            path = f"/models/{self.endpoint.remote_model}{path}"
        vectors, tokens = openai_wire.parse_embeddings(await self._call_json(path, body, request.inputs[0]))
        return Embeddings(vectors, tokens)

    async def similarity(self, source: str, sentences: list[str]) -> tuple[list[float], int]:
        out = await self.embed(EmbedRequest(inputs=(source, *sentences)))
        first, rest = out.vectors[0], out.vectors[1:]
        return [_cosine(first, v) for v in rest], out.tokens

    async def _call_json(self, path: str, body: dict[str, Any], affinity_key: str) -> Any:
        """A non-streamed call with the same failover as generate."""
        tried: set[str] = set()
        causes: list[str] = []
        while (replica := self.replicas.choose(affinity_key, tried)) is not None:
            if tried:
                replica.retries += 1
            tried.add(replica.url)
            replica.in_flight += 1
            replica.requests += 1
            started = time.perf_counter()
            try:
                response = await self._client.post(replica.url + path, json=body)
                await self._check(response)
                replica.latency_sum_s += time.perf_counter() - started
                replica.latency_count += 1
                return response.json()
            except _ReplicaFailed as failure:
                await self._failed(replica, failure)
                causes.append(f"{replica.url}: {failure.reason}")
            except (httpx.TransportError, ValueError) as exc:
                lost = _ReplicaFailed(f"connection failed ({type(exc).__name__}: {exc})", eject=True)
                await self._failed(replica, lost)
                causes.append(f"{replica.url}: {lost.reason}")
            finally:
                replica.in_flight -= 1
        raise UpstreamUnavailableError(self.model_id, causes, self.replicas.soonest_s())

    # -- watching the replicas ---------------------------------------------------------------------------
    def _probe_path(self) -> str:
        # Every OpenAI-compatible server has /v1/models (llama.cpp's server has no /health), and an engine-mode
        # infergate answers it while a model that loads on first use is not loaded yet (its /health would not).
        return "/health" if self.endpoint.protocol == "tgi" else "/v1/models"

    async def _probe(self, replica: Replica) -> None:
        if replica.load() > 0 and time.monotonic() >= replica.ejected_until:
            # Its requests are the probe: a failure among them ejects it. And llama.cpp's server, busy, would
            # hold the probe until its queue drains (a probe that gives up there once stalled it for seconds).
            return
        try:
            response = await self._client.get(replica.url + self._probe_path(), timeout=self._probe_timeout)
            ok, reason = response.status_code == 200, f"health probe: HTTP {response.status_code}"
        except httpx.TimeoutException as exc:
            replica.probe_timeouts += 1
            if replica.load() > 0 or replica.probe_timeouts < 2:
                # Busy, not dead: llama.cpp's server answers nothing while it generates (one request at a time,
                # the probe included), and a loaded machine can be slow once. A replica that hangs for real
                # fails its requests' own read timeout, or two probes in a row when idle.
                return
            ok, reason = False, f"health probe: {type(exc).__name__}"
        except httpx.HTTPError as exc:
            ok, reason = False, f"health probe: {type(exc).__name__}"
        replica.healthy_probe = ok
        if ok:
            replica.probe_timeouts = 0
        now = time.monotonic()
        if ok and now < replica.ejected_until:
            log.info("model %s: replica %s answers again", self.model_id, replica.url)
            self.replicas.restore(replica)
            await self._board.restore(self.model_id, replica.url)
        elif not ok:
            if now >= replica.ejected_until:
                log.warning("model %s: replica %s is down (%s)", self.model_id, replica.url, reason)
                self.replicas.eject(replica, reason)
            else:
                replica.ejected_until = now + self.endpoint.eject_s
                replica.last_error = reason
            await self._board.eject(self.model_id, replica.url, self.endpoint.eject_s, reason)

    async def _sync(self) -> None:
        view = await self._board.sync(self.model_id, {r.url: r.in_flight for r in self.replicas.replicas})
        if view is None:
            return
        now = time.monotonic()
        for replica in self.replicas.replicas:
            replica.others_in_flight = view.others_in_flight.get(replica.url, 0)
            left = view.ejected_s.get(replica.url)
            if left is not None and now + left > replica.ejected_until:
                if now >= replica.ejected_until:
                    replica.last_error = replica.last_error or "ejected by another gateway"
                replica.ejected_until = now + left

    async def _watch(self) -> None:
        next_probe = 0.0
        while not self._stopped:
            try:
                if time.monotonic() >= next_probe:
                    next_probe = time.monotonic() + self.endpoint.probe_interval_s
                    await asyncio.gather(*(self._probe(r) for r in self.replicas.replicas))
                await self._sync()
            except Exception:  # the watcher must outlive any one bad answer
                log.exception("model %s: replica watch failed; retrying", self.model_id)
            await asyncio.sleep(SYNC_S)


class _StopTrim:
    """Holds back the text that could be the start of a stop sequence, so that a TGI engine's stop sequence
    (which TGI keeps in the text) can be cut from the end when the caller asked OpenAI's way."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = stops
        self._hold = max(len(s) for s in stops)
        self._pending = ""

    def feed(self, text: str, finish: str | None) -> str:
        self._pending += text
        if finish is not None:
            out, self._pending = self._pending, ""
            if finish == "stop_sequence":
                for stop in self._stops:
                    if out.endswith(stop):
                        return out[: -len(stop)]
            return out
        cut = max(0, len(self._pending) - self._hold)
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out


def _error_message(raw: bytes) -> str:
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")[:300] or "no message"
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail", payload.get("message")))
        if isinstance(error, dict):
            error = error.get("message", error)
        return str(error)[:500]
    return str(payload)[:300]


def _retry_after(value: str | None) -> float:
    try:
        return min(60.0, max(0.0, float(value))) if value else 1.0
    except ValueError:
        return 1.0


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
