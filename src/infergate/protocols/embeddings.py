"""Embedding requests on the wire: the HF task API (TEI's options), sentence-similarity and OpenAI's
`/v1/embeddings`. Pure translation: bodies in, core requests out; vectors in, JSON out."""

from __future__ import annotations

import base64
import struct
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints

from infergate.core.errors import ValidationError
from infergate.core.requests import EmbedRequest
from infergate.protocols.openai.fields import check_fields, closed_schema
from infergate.protocols.wire import Doc, OptionsField

__all__ = [
    "EmbeddingsRequest",
    "FE_EXAMPLE",
    "FeatureExtractionRequest",
    "SentenceSimilarityRequest",
    "SS_EXAMPLE",
    "is_similarity_body",
    "openai_embeddings_response",
    "other_task_fields",
    "parse_feature_extraction",
    "parse_openai_embeddings",
    "parse_similarity",
]

FE_EXAMPLE = '{"inputs": ["first sentence", "second sentence"], "normalize": true}'
SS_EXAMPLE = '{"inputs": {"source_sentence": "a cat", "sentences": ["a dog", "a car"]}}'
OPENAI_EXAMPLE = '{"model": "sentence-transformers/all-MiniLM-L6-v2", "input": ["first", "second"]}'
_DIRECTIONS = {"left": "left", "right": "right"}


# The documented bodies (see wire.Doc): what the parse_* functions below accept.

_Texts = str | Annotated[list[str], Field(min_length=1)]
# "left" or "right", in any case (the parser lowers it).
_Direction = Annotated[str, StringConstraints(pattern=r"^([Ll][Ee][Ff][Tt]|[Rr][Ii][Gg][Hh][Tt])$")]


class _TeiOptions(Doc):
    normalize: bool | None = Field(None, description="scale each vector to length 1 (default true)")
    truncate: bool | None = Field(
        None,
        description="cut inputs longer than the model reads; false (the default) answers such an input with a 422",
    )
    truncation_direction: _Direction | None = Field(None, description='which end to cut: "right" (default) or "left"')
    prompt_name: str | None = Field(None, description="one of the model's prompts, put before each input")
    dimensions: int | None = Field(
        None, ge=1, description="keep the first N dimensions (Matryoshka models); at most the model's dimension"
    )


class FeatureExtractionParameters(_TeiOptions):
    """TEI's options may sit in `parameters` too (a top-level value wins); no other key: a text generation's
    parameters here mean the request was meant for another model (400)."""

    model_config = ConfigDict(extra="forbid")
    encoding_format: Any = Field(None, description="accepted and ignored (the answer is JSON floats)")


class FeatureExtractionRequest(_TeiOptions):
    """feature-extraction: one vector per input (a single vector for a string input)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"inputs": ["a cat", "a dog"], "normalize": True}]})
    inputs: _Texts = Field(description="a string or a non-empty list of strings")
    parameters: FeatureExtractionParameters | None = None
    stream: Literal[False] | None = Field(None, description="embeddings do not stream")
    options: OptionsField = None


class SentenceSimilarityInputs(Doc):
    source_sentence: str
    sentences: Annotated[list[str], Field(min_length=1)]


class SentenceSimilarityRequest(Doc):
    """sentence-similarity: the cosine similarity of `source_sentence` to each of `sentences`."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"inputs": {"source_sentence": "a cat", "sentences": ["a dog", "a car"]}}]}
    )
    inputs: SentenceSimilarityInputs
    options: OptionsField = None


def _openai_schema(schema: dict[str, Any]) -> None:
    closed_schema(schema)
    schema["examples"] = [{"model": "sentence-transformers/all-MiniLM-L6-v2", "input": ["first", "second"]}]


class EmbeddingsRequest(Doc):
    """OpenAI's `/v1/embeddings` body."""

    model_config = ConfigDict(json_schema_extra=_openai_schema)
    model: str | None = Field(None, description="an embedding model; the first one in the catalog when absent")
    input: _Texts = Field(description="a string or a non-empty list of strings (not token ids)")
    encoding_format: Literal["float", "base64"] | None = Field(
        None, description='"float" (default) or "base64" (little-endian float32)'
    )
    dimensions: int | None = Field(None, ge=1, description="keep the first N dimensions; at most the model's")
    user: str | None = None


def is_similarity_body(body: Any) -> bool:
    """The shape of a sentence-similarity call: `inputs` is an object with `source_sentence`."""
    inputs = body.get("inputs") if isinstance(body, dict) else None
    return isinstance(inputs, dict) and "source_sentence" in inputs


def _texts(value: Any, name: str, example: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValidationError(
        f"`{name}` must be a string or a non-empty list of strings. Expected a body like {example}", param=name
    )


def _option(body: dict[str, Any], name: str, kind: type, default: Any) -> Any:
    """TEI's options sit at the top level (huggingface_hub sends them there); `parameters` works as well."""
    params = body.get("parameters")
    value = body.get(name)
    if value is None and isinstance(params, dict):
        value = params.get(name)
    if value is None:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValidationError(f"`{name}` must be a {kind.__name__}, not {value!r}")
    return value


_FE_OPTIONS = {"normalize", "prompt_name", "truncate", "truncation_direction", "dimensions", "encoding_format"}


def other_task_fields(body: Any) -> list[str]:
    """Fields of a feature-extraction body that belong to another task (a text generation's parameters, a
    stream): such a request was meant for another model."""
    if not isinstance(body, dict):
        return []
    params = body.get("parameters")
    fields = [f"parameters.{k}" for k in params if k not in _FE_OPTIONS] if isinstance(params, dict) else []
    return fields + (["stream"] if body.get("stream") else [])


def parse_feature_extraction(body: Any) -> tuple[EmbedRequest, bool]:
    """The request, and whether one string was sent (its answer is one vector, not a list of them)."""
    if isinstance(body, str):
        body = {"inputs": body}
    if not isinstance(body, dict):
        raise ValidationError(f"the body must be a JSON object. Expected a body like {FE_EXAMPLE}")
    texts = _texts(body.get("inputs"), "inputs", FE_EXAMPLE)
    direction = _option(body, "truncation_direction", str, "right").lower()
    if direction not in _DIRECTIONS:
        raise ValidationError(f'`truncation_direction` must be "left" or "right", not {direction!r}')
    dimensions = _option(body, "dimensions", int, None)
    if dimensions is not None and dimensions < 1:
        raise ValidationError("`dimensions` must be a positive integer")
    request = EmbedRequest(
        inputs=texts,
        normalize=_option(body, "normalize", bool, True),
        truncate=_option(body, "truncate", bool, False),
        truncation_direction=direction,
        prompt_name=_option(body, "prompt_name", str, None),
        dimensions=dimensions,
    )
    return request, isinstance(body.get("inputs"), str)


def parse_similarity(body: Any) -> tuple[str, list[str]]:
    inputs = body.get("inputs") if isinstance(body, dict) else None
    if not isinstance(inputs, dict):
        raise ValidationError(f"`inputs` must be an object with `source_sentence` and `sentences`: {SS_EXAMPLE}")
    source, sentences = inputs.get("source_sentence"), inputs.get("sentences")
    if not isinstance(source, str):
        raise ValidationError(f"`inputs.source_sentence` must be a string. Expected a body like {SS_EXAMPLE}")
    if not (isinstance(sentences, list) and sentences and all(isinstance(s, str) for s in sentences)):
        raise ValidationError(f"`inputs.sentences` must be a non-empty list of strings. Expected {SS_EXAMPLE}")
    return source, list(sentences)


# OpenAI's embeddings request fields (`user` is accepted without effect, as on the other OpenAI routes).
_OPENAI_FIELDS = ("input", "model", "encoding_format", "dimensions")


def parse_openai_embeddings(body: Any) -> tuple[str | None, EmbedRequest, str]:
    """(the model asked for, the request, the encoding format: "float" or "base64")."""
    if not isinstance(body, dict):
        raise ValidationError(f"the body must be a JSON object. Expected a body like {OPENAI_EXAMPLE}")
    check_fields(body, _OPENAI_FIELDS, {})
    model = body.get("model")
    value = body.get("input")
    if isinstance(value, list) and value and all(isinstance(v, int) or isinstance(v, list) for v in value):
        raise ValidationError(
            "`input` as token ids is not supported; send the text itself (a string or a list of strings). "
            "LangChain's OpenAIEmbeddings sends OpenAI's token ids unless given check_embedding_ctx_length=False",
            param="input",
        )
    texts = _texts(value, "input", OPENAI_EXAMPLE)
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ValidationError(f'`encoding_format` must be "float" or "base64", not {encoding!r}', "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise ValidationError("`dimensions` must be a positive integer", param="dimensions")
    request = EmbedRequest(inputs=texts, normalize=True, dimensions=dimensions)
    return (model if isinstance(model, str) else None), request, encoding


def openai_embeddings_response(vectors: list[list[float]], model: str, tokens: int, encoding: str) -> dict[str, Any]:
    def encode(vector: list[float]) -> list[float] | str:
        if encoding == "float":
            return vector
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")

    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(vectors)],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
