"""The top-level fields of OpenAI requests that the wire models do not honour, and what becomes of each.

OpenAI answers 400 "Unrecognized request argument supplied: foo" for a field it does not know, so a typo never
goes unnoticed; this server does the same, after knowing every field that real clients send: OpenAI's own
(the `openai` SDK, LangChain, LiteLLM) and vLLM's and TGI's extensions (huggingface_hub, lm-eval, chat-ui).

- ``IGNORED``: accepted, and without effect here (bookkeeping for OpenAI's platform, or hints that do not
  change the answer).
- ``REFUSED``: accepted at their neutral value (``tools: []``, ``response_format: {"type": "text"}``); any
  other value asks for what this server cannot do, and is a 400 naming the field and saying what to do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from infergate.core.errors import BadRequestError

__all__ = [
    "CHAT_REFUSED",
    "COMPLETION_REFUSED",
    "IGNORED",
    "SERVER_FIELDS",
    "check_fields",
    "closed_schema",
    "lift_tgi_parameters",
]

IGNORED = frozenset(
    {
        "user",  # OpenAI: an end-user id for abuse monitoring
        "metadata",  # OpenAI: tags for stored completions
        "store",  # OpenAI: keep the completion for distillation/evals
        "service_tier",  # OpenAI: which capacity pool to bill
        "prompt_cache_key",  # OpenAI: a prompt-caching hint
        "safety_identifier",  # OpenAI: the newer name for `user`
        "prediction",  # OpenAI: predicted output, a speed hint; the answer is the same without it
        "tool_prompt",  # TGI: its words introducing the tools; the model's template (or ours) introduces them
        "guided_decoding_backend",  # vLLM: which grammar library; this server has one (llguidance)
        "request_id",  # vLLM: a caller-chosen id
        "priority",  # vLLM: scheduling priority; here the caller's tier sets it
        "spaces_between_special_tokens",  # vLLM: special tokens are never in the text here
    }
)


# This server's own, read by its HTTP layer: `"options": {"wait_for_model": true, "use_cache": false}`, the body
# form of x-wait-for-model and x-use-cache (the HF Inference API's).
SERVER_FIELDS = frozenset({"options"})


@dataclass(frozen=True, slots=True)
class _Refused:
    neutral: Callable[[Any], bool]  # the values that ask for nothing beyond what the server does
    advice: str


def _none(value: Any) -> bool:
    return value is None


def _empty(value: Any) -> bool:
    return value is None or value == [] or value == {}


def _one_of(*allowed: Any) -> Callable[[Any], bool]:
    return lambda value: value is None or any(value == a and type(value) is type(a) for a in allowed)


def _text_modalities(value: Any) -> bool:
    return value is None or (isinstance(value, list) and all(m == "text" for m in value))


_LEGACY_FUNCTIONS = "the legacy `functions` API is not supported; send them as `tools` (and `tool_choice`)"
_COMMON_REFUSED = {
    "guided_whitespace_pattern": _Refused(
        _none, "JSON is generated compactly here, with OpenAI's spacing; leave it out"
    ),
    "use_beam_search": _Refused(_one_of(False), "beam search is not supported; leave it out (sampling or greedy)"),
    "length_penalty": _Refused(_one_of(1, 1.0), "it applies to beam search, which is not supported; leave it out"),
    "min_tokens": _Refused(_one_of(0), "a minimum length is not supported; leave it out"),
    "stop_token_ids": _Refused(_empty, "stop token ids are not supported; use `stop` with the tokens' text"),
    "prompt_logprobs": _Refused(
        _none, "use /v1/completions with `echo: true` and `logprobs` for the prompt tokens' logprobs"
    ),
    "skip_special_tokens": _Refused(_one_of(True), "special tokens are always left out of the text here"),
    "return_tokens_as_token_ids": _Refused(_one_of(False), "tokens are returned as text; leave it out"),
    "logits_processors": _Refused(_empty, "custom logits processors are not supported; leave them out"),
    "allowed_token_ids": _Refused(_empty, "use `logit_bias` to favour or ban tokens"),
    "bad_words": _Refused(_empty, "use `logit_bias` with -100 to ban tokens"),
    "vllm_xargs": _Refused(_empty, "leave it out"),
    "kv_transfer_params": _Refused(_empty, "disaggregated serving is not supported; leave it out"),
}

CHAT_REFUSED = {
    **_COMMON_REFUSED,
    "functions": _Refused(_empty, _LEGACY_FUNCTIONS),
    "function_call": _Refused(_one_of("none", "auto"), _LEGACY_FUNCTIONS),
    "audio": _Refused(_none, "audio output is not supported; leave `audio` out and ask for text"),
    "modalities": _Refused(_text_modalities, 'only text output is supported; send ["text"] or leave it out'),
    "reasoning_effort": _Refused(
        _none, "it applies to reasoning models, and the models served here are not; leave it out"
    ),
    "verbosity": _Refused(_none, "it applies to reasoning models, and the models served here are not; leave it out"),
    "web_search_options": _Refused(_none, "web search is not available on this server; leave it out"),
    "best_of": _Refused(_one_of(1), "use `n` for several choices"),
    "echo": _Refused(_one_of(False), "use /v1/completions with `echo: true` to get the prompt back"),
    "continue_final_message": _Refused(
        _one_of(False), "continuing the last assistant message is not supported; leave it out"
    ),
    "chat_template": _Refused(_none, "the model's own chat template is always used; leave it out"),
    "chat_template_kwargs": _Refused(_empty, "the model's own chat template is used as it is; leave it out"),
    "documents": _Refused(_empty, "put the documents in the messages"),
    "mm_processor_kwargs": _Refused(_empty, "the models served here read text only; leave it out"),
}

COMPLETION_REFUSED = {
    **_COMMON_REFUSED,
    "watermark": _Refused(_one_of(False), "watermarking is not supported by this server; leave it out"),
    "adapter_id": _Refused(_none, "this server serves no LoRA adapters; leave it out"),
}

# TGI's names for OpenAI's fields. huggingface.js 4.x sends `textGeneration` for an endpoint URL to
# `{url}/v1/completions` with TGI's `parameters` flattened into the body, and llm-vscode's default request body
# keeps them under `parameters`: both mean what TGI means by them.
_TGI_NAMES = {
    "max_new_tokens": "max_tokens",
    "return_full_text": "echo",
    "truncate": "truncate_prompt_tokens",
    "stop_sequences": "stop",
}
# TGI fields that shape TGI's own answer, which an OpenAI completion has no place for.
_TGI_ANSWER_SHAPE = ("details", "decoder_input_details", "top_n_tokens")


def check_fields(body: dict[str, Any], known: Iterable[str], refused: dict[str, _Refused]) -> None:
    """Refuse an unknown top-level field, or a field asking for what this server cannot do (BadRequestError
    naming it, as OpenAI's 400 does)."""
    known = set(known)
    unknown = [k for k in body if k not in known and k not in IGNORED and k not in SERVER_FIELDS and k not in refused]
    if unknown:
        raise BadRequestError(f"Unrecognized request argument supplied: {', '.join(unknown)}", param=unknown[0])
    for name, rule in refused.items():
        if name in body and not rule.neutral(body[name]):
            raise BadRequestError(f"`{name}` is not supported by this server: {rule.advice}", param=name)


def lift_tgi_parameters(body: dict[str, Any]) -> dict[str, Any]:
    """A completions body with TGI's parameters (top level, or under `parameters`) under OpenAI's names; a field
    given under both names keeps the OpenAI one."""
    lifted = dict(body)
    nested = lifted.pop("parameters", None)
    if nested is not None and not isinstance(nested, dict):
        raise BadRequestError("`parameters` must be an object of TGI parameters", param="parameters")
    for name, value in (nested or {}).items():
        lifted.setdefault(name, value)
    for tgi, openai in _TGI_NAMES.items():
        if tgi in lifted:
            value = lifted.pop(tgi)
            lifted.setdefault(openai, value)
    for name in _TGI_ANSWER_SHAPE:
        lifted.pop(name, None)
    return lifted


def closed_schema(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a top-level OpenAI request model: what ``check_fields`` lets through is what the
    schema documents. The fields accepted without effect (any value) and `options` become properties, and any
    other field is refused (`additionalProperties: false`). The refused fields are left out: only their neutral
    value is accepted, which the schema does not try to say."""
    properties = schema.setdefault("properties", {})
    for name in sorted(IGNORED):
        properties.setdefault(name, {"description": "accepted, without effect on the answer"})
    properties.setdefault(
        "options",
        {"description": 'the HF API\'s options, `{"use_cache": false, "wait_for_model": false}` (the headers win)'},
    )
    schema["additionalProperties"] = False
