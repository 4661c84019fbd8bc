"""The transformers pipeline tasks on the HF task API: each task's `inputs`, the `parameters` it accepts (checked
here, with messages that show a good body), and the answer in the shape the clients parse (protocol §1.3,
§3.2: text-classification is a nested list, summarization a list, zero-shot a list of labels with scores)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints
from pydantic.json_schema import SkipJsonSchema

from infergate.core.errors import ValidationError
from infergate.protocols.wire import Doc, NonBlank, OptionsField, omit_null_defaults

__all__ = ["EXAMPLES", "REQUESTS", "parse", "render"]

EXAMPLES = {
    "fill-mask": '{"inputs": "Paris is the [MASK] of France.", "parameters": {"top_k": 3}}',
    "text-classification": '{"inputs": "I like you.", "parameters": {"top_k": 2}}',
    "token-classification": '{"inputs": "My name is Sarah.", "parameters": {"aggregation_strategy": "simple"}}',
    "zero-shot-classification": '{"inputs": "I loved it.", "parameters": {"candidate_labels": ["good", "bad"]}}',
    "question-answering": '{"inputs": {"question": "Where do I live?", "context": "I live in Paris."}}',
    "summarization": '{"inputs": "A long text ...", "parameters": {"generate_parameters": {"max_new_tokens": 40}}}',
    "translation": '{"inputs": "Hello", "parameters": {"src_lang": "en", "tgt_lang": "fr"}}',
    "text2text-generation": '{"inputs": "Translate to German: Hello", "parameters": {"max_new_tokens": 20}}',
}
_MAX_NEW_TOKENS = 512
# What a seq2seq task may pass to generate(): bounded, so that no call runs without limit.
_GENERATE = {
    "max_new_tokens": int,
    "min_new_tokens": int,
    "num_beams": int,
    "do_sample": bool,
    "temperature": float,
    "top_k": int,
    "top_p": float,
    "repetition_penalty": float,
    "no_repeat_ngram_size": int,
    "early_stopping": bool,
}
_AGGREGATIONS = ("none", "simple", "first", "average", "max")


# The documented bodies (see wire.Doc), one per task: what `parse` accepts. A parameter sent as null is absent.


class _Body(Doc):
    inputs: NonBlank = Field(description="the text")
    options: OptionsField = None


class FillMaskParameters(Doc):
    top_k: int | None = Field(None, ge=1, description="how many guesses for the mask (default 5)")
    targets: str | list[str] | None = Field(None, description="score only these words")


class FillMaskRequest(_Body):
    """fill-mask: `inputs` holds the model's mask token."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": "Paris is the [MASK] of France."}]})
    parameters: FillMaskParameters | None = None


class TextClassificationParameters(Doc):
    top_k: int | None = Field(None, ge=1, description="how many labels (default: the best one)")
    function_to_apply: Literal["sigmoid", "softmax", "none"] | None = None


class TextClassificationRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": "I like you."}]})
    parameters: TextClassificationParameters | None = None


class TokenClassificationParameters(Doc):
    aggregation_strategy: Literal["none", "simple", "first", "average", "max"] | None = Field(
        None, description='how to group sub-word tokens into entities (default "simple")'
    )
    ignore_labels: list[str] | None = None


class TokenClassificationRequest(_Body):
    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": "My name is Sarah."}]})
    parameters: TokenClassificationParameters | None = None


# A comma-separated string needs one label in it.
_LabelList = Annotated[str, StringConstraints(pattern=r"[^,\s]")]


class ZeroShotParameters(Doc):
    candidate_labels: Annotated[list[str], Field(min_length=1)] | _LabelList = Field(
        description="the labels to choose from: a list, or one comma-separated string"
    )
    multi_label: bool | None = Field(None, description="score each label on its own instead of summing to 1")
    hypothesis_template: Annotated[str, StringConstraints(pattern=r"\{\}")] | None = Field(
        None, description='the NLI hypothesis, with "{}" where the label goes'
    )


class ZeroShotClassificationRequest(_Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inputs": "I loved it.", "parameters": {"candidate_labels": ["good", "bad"]}}]}
    )
    parameters: ZeroShotParameters


class QuestionAnsweringInputs(Doc):
    question: str
    context: str


class QuestionAnsweringParameters(Doc):
    top_k: int | None = Field(None, ge=1)
    max_answer_len: int | None = Field(None, ge=1)
    max_question_len: int | None = Field(None, ge=1)
    doc_stride: int | None = Field(None, ge=1)
    handle_impossible_answer: bool | None = None


class QuestionAnsweringRequest(Doc):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inputs": {"question": "Where do I live?", "context": "I live in Paris."}}]}
    )
    inputs: QuestionAnsweringInputs
    parameters: QuestionAnsweringParameters | None = None
    options: OptionsField = None


class Seq2SeqGenerateParameters(Doc):
    """What a seq2seq task passes to generate() (the `_GENERATE` table); no other key, and no nulls."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=omit_null_defaults)
    max_new_tokens: Annotated[int, Field(ge=1, le=_MAX_NEW_TOKENS)] | SkipJsonSchema[None] = Field(
        None, description="default 64"
    )
    min_new_tokens: int | SkipJsonSchema[None] = None
    num_beams: int | SkipJsonSchema[None] = None
    do_sample: bool | SkipJsonSchema[None] = None
    temperature: float | SkipJsonSchema[None] = None
    top_k: int | SkipJsonSchema[None] = None
    top_p: float | SkipJsonSchema[None] = None
    repetition_penalty: float | SkipJsonSchema[None] = None
    no_repeat_ngram_size: int | SkipJsonSchema[None] = None
    early_stopping: bool | SkipJsonSchema[None] = None


class Seq2SeqParameters(Doc):
    """`generate_parameters` is the current form; the same names at the top of `parameters` are the legacy
    one (`generate_parameters` wins)."""

    generate_parameters: Seq2SeqGenerateParameters | None = None
    clean_up_tokenization_spaces: bool | None = None
    max_new_tokens: int | None = Field(None, ge=1, le=_MAX_NEW_TOKENS, description="legacy")
    min_new_tokens: int | None = Field(None, description="legacy")
    num_beams: int | None = Field(None, description="legacy")
    do_sample: bool | None = Field(None, description="legacy")
    temperature: float | None = Field(None, description="legacy")
    top_k: int | None = Field(None, description="legacy")
    top_p: float | None = Field(None, description="legacy")
    repetition_penalty: float | None = Field(None, description="legacy")
    no_repeat_ngram_size: int | None = Field(None, description="legacy")
    early_stopping: bool | None = Field(None, description="legacy")


class TranslationParameters(Seq2SeqParameters):
    src_lang: str | None = None
    tgt_lang: str | None = None


class Seq2SeqRequest(_Body):
    """summarization and text2text-generation."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"inputs": "A long text ...", "parameters": {"generate_parameters": {"max_new_tokens": 40}}}]
        }
    )
    parameters: Seq2SeqParameters | None = None


class TranslationRequest(_Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inputs": "Hello", "parameters": {"src_lang": "en", "tgt_lang": "fr"}}]}
    )
    parameters: TranslationParameters | None = None


REQUESTS: dict[str, type[Doc]] = {
    "fill-mask": FillMaskRequest,
    "text-classification": TextClassificationRequest,
    "token-classification": TokenClassificationRequest,
    "zero-shot-classification": ZeroShotClassificationRequest,
    "question-answering": QuestionAnsweringRequest,
    "summarization": Seq2SeqRequest,
    "translation": TranslationRequest,
    "text2text-generation": Seq2SeqRequest,
}


def _fail(task: str, message: str) -> ValidationError:
    return ValidationError(f"{message}. Expected a body like {EXAMPLES[task]}")


def _check(task: str, name: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise _fail(task, f"`parameters.{name}` must be a {names}, not {value!r}")
    return value


def _positive(task: str, name: str, value: Any) -> int:
    value = _check(task, name, value, int)
    if value < 1:
        raise _fail(task, f"`parameters.{name}` must be at least 1")
    return int(value)


def _text(task: str, inputs: Any) -> str:
    if not isinstance(inputs, str) or not inputs.strip():
        raise _fail(task, "`inputs` must be a non-empty string")
    return inputs


def _generate_parameters(task: str, params: dict[str, Any]) -> dict[str, Any]:
    """Generation options, from `generate_parameters` (the current spec) or the top of `parameters` (legacy)."""
    nested = params.get("generate_parameters") or {}
    if not isinstance(nested, dict):
        raise _fail(task, "`parameters.generate_parameters` must be an object")
    merged = {k: v for k, v in params.items() if k in _GENERATE and v is not None} | nested
    out: dict[str, Any] = {}
    for name, value in merged.items():
        if name not in _GENERATE:
            raise _fail(task, f"`generate_parameters.{name}` is not supported; use {', '.join(_GENERATE)}")
        out[name] = _check(task, name, value, _GENERATE[name])
    wanted = out.get("max_new_tokens", 64)
    if not 1 <= wanted <= _MAX_NEW_TOKENS:
        raise _fail(task, f"`max_new_tokens` must be between 1 and {_MAX_NEW_TOKENS}")
    out["max_new_tokens"] = wanted
    return out


def _fill_mask(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"top_k": _positive("fill-mask", "top_k", params.get("top_k", 5))}
    if (targets := params.get("targets")) is not None:
        out["targets"] = _check("fill-mask", "targets", targets, (str, list))
    return out


def _text_classification(params: dict[str, Any]) -> dict[str, Any]:
    task = "text-classification"
    top_k = params.get("top_k")
    out: dict[str, Any] = {"top_k": None if top_k is None else _positive(task, "top_k", top_k)}
    if (fn := params.get("function_to_apply")) is not None:
        if fn not in ("sigmoid", "softmax", "none"):
            raise _fail(task, '`parameters.function_to_apply` must be "sigmoid", "softmax" or "none"')
        out["function_to_apply"] = fn
    return out


def _token_classification(params: dict[str, Any]) -> dict[str, Any]:
    task = "token-classification"
    strategy = params.get("aggregation_strategy", "simple")
    if strategy not in _AGGREGATIONS:
        raise _fail(task, f"`parameters.aggregation_strategy` must be one of {', '.join(_AGGREGATIONS)}")
    out: dict[str, Any] = {"aggregation_strategy": strategy}
    if (ignore := params.get("ignore_labels")) is not None:
        out["ignore_labels"] = _check(task, "ignore_labels", ignore, list)
    return out


def _zero_shot(params: dict[str, Any]) -> dict[str, Any]:
    task = "zero-shot-classification"
    labels = params.get("candidate_labels")
    if isinstance(labels, str):
        labels = [x.strip() for x in labels.split(",") if x.strip()]
    if not (isinstance(labels, list) and labels and all(isinstance(x, str) for x in labels)):
        raise _fail(task, "`parameters.candidate_labels` must be a non-empty list of strings")
    out: dict[str, Any] = {"candidate_labels": labels}
    if (multi := params.get("multi_label")) is not None:
        out["multi_label"] = _check(task, "multi_label", multi, bool)
    if (template := params.get("hypothesis_template")) is not None:
        if not isinstance(template, str) or "{}" not in template:
            raise _fail(task, '`parameters.hypothesis_template` must be a string with "{}" where the label goes')
        out["hypothesis_template"] = template
    return out


def _question_answering(params: dict[str, Any]) -> dict[str, Any]:
    task = "question-answering"
    out: dict[str, Any] = {}
    for name in ("top_k", "max_answer_len", "max_question_len", "doc_stride"):
        if (value := params.get(name)) is not None:
            out[name] = _positive(task, name, value)
    if (impossible := params.get("handle_impossible_answer")) is not None:
        out["handle_impossible_answer"] = _check(task, "handle_impossible_answer", impossible, bool)
    return out


def _seq2seq(task: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def parse(params: dict[str, Any]) -> dict[str, Any]:
        out = _generate_parameters(task, params)
        if (clean := params.get("clean_up_tokenization_spaces")) is not None:
            out["clean_up_tokenization_spaces"] = _check(task, "clean_up_tokenization_spaces", clean, bool)
        if task == "translation":
            for name in ("src_lang", "tgt_lang"):
                if (lang := params.get(name)) is not None:
                    out[name] = _check(task, name, lang, str)
        return out

    return parse


_PARAMETERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "fill-mask": _fill_mask,
    "text-classification": _text_classification,
    "token-classification": _token_classification,
    "zero-shot-classification": _zero_shot,
    "question-answering": _question_answering,
    "summarization": _seq2seq("summarization"),
    "translation": _seq2seq("translation"),
    "text2text-generation": _seq2seq("text2text-generation"),
}


def parse(task: str, body: Any) -> tuple[Any, dict[str, Any]]:
    """(the pipeline's inputs, its keyword arguments) for ``task``; a raw string body is the inputs."""
    if isinstance(body, str):
        body = {"inputs": body}
    if not isinstance(body, dict):
        raise _fail(task, "the body must be a JSON object")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise _fail(task, "`parameters` must be an object")
    params = {k: v for k, v in params.items() if v is not None}
    inputs = body.get("inputs")
    if task == "question-answering":
        if not (isinstance(inputs, dict) and isinstance(inputs.get("question"), str)):
            raise _fail(task, "`inputs` must be an object with `question` and `context` strings")
        if not isinstance(inputs.get("context"), str):
            raise _fail(task, "`inputs.context` must be a string")
        inputs = {"question": inputs["question"], "context": inputs["context"]}
    else:
        inputs = _text(task, inputs)
    return inputs, _PARAMETERS[task](params)


def render(task: str, output: Any) -> Any:
    """The pipeline's output in the shape the HF clients parse."""
    if task == "text-classification":
        return [output if isinstance(output, list) else [output]]  # a nested list, one per input
    if task == "zero-shot-classification":
        return [{"label": lab, "score": s} for lab, s in zip(output["labels"], output["scores"], strict=True)]
    if task in ("summarization", "translation", "text2text-generation"):
        return output if isinstance(output, list) else [output]
    return output
