"""TGI wire <-> core: validation with TGI's rules and messages (router/src/validation.rs), and rendering."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infergate.core.engine import ModelLimits
from infergate.core.errors import BadRequestError, ValidationError
from infergate.core.outputs import GenerationResult, PromptInfo, StepEvent, Token
from infergate.core.params import SamplingParams, StoppingParams
from infergate.core.requests import GenerationRequest
from infergate.protocols.grammar import tgi_grammar
from infergate.protocols.tgi.schemas import GenerateParameters, GenerateRequest
from infergate.protocols.wire import parse_wire

__all__ = [
    "DEFAULT_MAX_NEW_TOKENS",
    "TgiCall",
    "completion_stream_fields",
    "parse_generate",
    "render_details",
    "render_response",
    "render_stream_event",
    "token_json",
    "validate_parameters",
]

DEFAULT_MAX_NEW_TOKENS = 20  # the announcement's default
EXAMPLE = '{"inputs": "Once upon a time", "parameters": {"max_new_tokens": 20}}'


@dataclass(frozen=True, slots=True)
class TgiCall:
    """A validated TGI call: the core request plus what only rendering needs."""

    request: GenerationRequest
    stream: bool
    details: bool
    return_full_text: bool
    best_of: int
    use_cache: bool | None
    wait_for_model: bool | None


def parse_generate(body: Any, *, stream: bool | None, full_text_default: bool, limits: ModelLimits) -> TgiCall:
    """Turn a parsed JSON body into a TgiCall. ``stream`` forces streaming (``/generate_stream``); otherwise
    the body's top-level ``stream`` decides."""
    if isinstance(body, str):  # the legacy API accepted a bare string as the inputs
        body = {"inputs": body}
    if not isinstance(body, dict):
        raise BadRequestError(f"the body must be a JSON object like {EXAMPLE}; got a JSON {type(body).__name__}")
    wire = parse_wire(GenerateRequest, body, EXAMPLE)
    params = wire.parameters or GenerateParameters()
    streaming = stream if stream is not None else bool(wire.stream)
    request, best_of = validate_parameters(wire.inputs, params, streaming, limits)
    options = wire.options or {}
    return TgiCall(
        request=request,
        stream=streaming,
        details=bool(params.details or params.decoder_input_details),
        return_full_text=params.return_full_text if params.return_full_text is not None else full_text_default,
        best_of=best_of,
        use_cache=options.get("use_cache") if isinstance(options.get("use_cache"), bool) else None,
        wait_for_model=options.get("wait_for_model") if isinstance(options.get("wait_for_model"), bool) else None,
    )


def validate_parameters(
    inputs: str, p: GenerateParameters, streaming: bool, limits: ModelLimits
) -> tuple[GenerationRequest, int]:
    """Apply TGI's checks in TGI's order; return the core request and best_of."""
    if not inputs:
        raise ValidationError("`inputs` cannot be empty")
    best_of = p.best_of if p.best_of is not None else 1
    sampling_asked = bool(
        p.do_sample
        or p.temperature is not None
        or p.top_k is not None
        or p.top_p is not None
        or p.typical_p is not None
    )
    if best_of != 1:
        if limits.max_best_of == 1:
            raise ValidationError("`best_of` != 1 is not allowed for this endpoint")
        if best_of <= 0 or best_of > limits.max_best_of:
            raise ValidationError(f"`best_of` must be > 0 and <= {limits.max_best_of}. Given: {best_of}")
        if not sampling_asked:
            raise ValidationError("you must use sampling when `best_of` is > 1")
        if p.seed is not None:
            raise ValidationError("`seed` must not be set when `best_of` > 1")
        if streaming:
            raise ValidationError("`best_of` != 1 is not supported when streaming tokens")
    temperature = 1.0 if p.temperature is None else p.temperature
    if not temperature > 0:  # `not >` also refuses NaN
        raise ValidationError("`temperature` must be strictly positive")
    repetition_penalty = 1.0 if p.repetition_penalty is None else p.repetition_penalty
    if not repetition_penalty > 0:
        raise ValidationError("`repetition_penalty` must be strictly positive")
    frequency_penalty = 0.0 if p.frequency_penalty is None else p.frequency_penalty
    if not -2.0 <= frequency_penalty <= 2.0:
        raise ValidationError("`frequency_penalty` must be >= -2.0 and <= 2.0")
    top_p = 1.0 if p.top_p is None else p.top_p
    if p.top_p is not None and not 0.0 < top_p < 1.0:
        raise ValidationError("`top_p` must be > 0.0 and < 1.0")
    typical_p = 1.0 if p.typical_p is None else p.typical_p
    if p.typical_p is not None and not 0.0 < typical_p < 1.0:
        raise ValidationError("`typical_p` must be > 0.0 and < 1.0")
    if p.top_k is not None and p.top_k <= 0:
        raise ValidationError("`top_k` must be strictly positive")
    max_new_tokens = DEFAULT_MAX_NEW_TOKENS if p.max_new_tokens is None else p.max_new_tokens
    if max_new_tokens <= 0:
        raise ValidationError("`max_new_tokens` must be strictly positive")
    stop = tuple(p.stop if p.stop is not None else p.stop_sequences or [])
    if len(stop) > limits.max_stop_sequences:
        raise ValidationError(f"`stop` supports up to {limits.max_stop_sequences} stop sequences. Given: {len(stop)}")
    top_n = p.top_n_tokens or 0
    if not 0 <= top_n <= limits.max_top_n_tokens:
        raise ValidationError(f"`top_n_tokens` must be >= 0 and <= {limits.max_top_n_tokens}. Given: {top_n}")
    if p.decoder_input_details and streaming:
        raise ValidationError("`decoder_input_details` == true is not supported when streaming tokens")
    if p.truncate is not None and (p.truncate <= 0 or p.truncate > limits.max_input_tokens):
        raise ValidationError(
            f"`truncate` must be strictly positive and less than {limits.max_input_tokens}. Given: {p.truncate}"
        )
    grammar = tgi_grammar(p.grammar) if p.grammar is not None else None
    if p.watermark:
        raise ValidationError("`watermark` is not supported by this server; leave it out or set it to false")
    if p.adapter_id:
        raise ValidationError(f"adapter `{p.adapter_id}` is not available: this server serves no LoRA adapters")
    # As in TGI (and the announcement): setting a sampling parameter turns sampling on.
    do_sample = bool(p.do_sample or temperature != 1.0 or p.top_k is not None or top_p < 1.0 or typical_p < 1.0)
    sampling = SamplingParams(
        do_sample=do_sample,
        temperature=temperature,
        top_k=p.top_k,
        top_p=top_p,
        typical_p=typical_p,
        repetition_penalty=repetition_penalty,
        frequency_penalty=frequency_penalty,
        seed=p.seed,
    )
    request = GenerationRequest(
        prompt=inputs,
        sampling=sampling,
        stopping=StoppingParams(max_new_tokens=max_new_tokens, stop=stop, include_stop_in_output=True),
        truncate=p.truncate,
        top_n_tokens=top_n,
        prefill_details=bool(p.decoder_input_details),
        grammar=grammar,
    )
    return request, best_of


def token_json(token: Token) -> dict[str, Any]:
    return {"id": token.id, "text": token.text, "logprob": token.logprob, "special": token.special}


def _sequence_details(result: GenerationResult) -> dict[str, Any]:
    out: dict[str, Any] = {
        "finish_reason": result.finish_reason,
        "generated_tokens": result.generated_tokens,
        "seed": result.seed,
        "prefill": [{"id": t.id, "text": t.text, "logprob": t.logprob} for t in result.prefill],
        "tokens": [token_json(t) for t in result.tokens],
    }
    if result.top_tokens:
        out["top_tokens"] = [[token_json(t) for t in step] for step in result.top_tokens]
    return out


def render_details(result: GenerationResult, others: list[tuple[str, GenerationResult]]) -> dict[str, Any]:
    details = _sequence_details(result)
    if others:
        details["best_of_sequences"] = [{"generated_text": text, **_sequence_details(other)} for text, other in others]
    return details


def render_response(
    call: TgiCall, result: GenerationResult, others: list[GenerationResult] | None = None
) -> dict[str, Any]:
    """`/generate`'s dict; `/` and `/models/{id}` wrap it in a list."""
    prefix = call.request.prompt if call.return_full_text else ""
    out: dict[str, Any] = {"generated_text": prefix + result.text}
    if call.details:
        out["details"] = render_details(result, [(prefix + o.text, o) for o in others or []])
    return out


def render_stream_event(call: TgiCall, info: PromptInfo, event: StepEvent, text_so_far: str) -> dict[str, Any]:
    """One SSE payload; the last one carries the full text (and details when asked)."""
    payload: dict[str, Any] = {"index": event.index, "token": token_json(event.token)}
    if event.top_tokens:
        payload["top_tokens"] = [token_json(t) for t in event.top_tokens]
    payload["generated_text"] = None
    payload["details"] = None
    if event.finish_reason is not None:
        prefix = call.request.prompt if call.return_full_text else ""
        payload["generated_text"] = prefix + text_so_far
        if call.details:
            payload["details"] = {
                "finish_reason": event.finish_reason,
                "generated_tokens": event.index,
                "seed": info.seed,
                "input_length": event.prompt_tokens if event.prompt_tokens is not None else info.input_length,
            }
    return payload


def completion_stream_fields(event: StepEvent, generated_text: str | None) -> dict[str, Any]:
    """TGI's stream-event fields, for an OpenAI completion chunk to carry as well. huggingface.js 4.x streams
    text generation from an endpoint's `/v1/completions` but hands each event to its caller as TGI's
    (`chunk.token.text`, then `generated_text`). ``token.text`` is the chunk's text, so that the tokens join
    into ``generated_text``, which only the last event has."""
    token = {"id": event.token.id, "text": event.text, "logprob": event.token.logprob, "special": event.token.special}
    return {"token": token, "generated_text": generated_text, "details": None}
