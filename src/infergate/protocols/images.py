"""Text-to-image on the HF task API: `{"inputs": prompt, "parameters": {...}}` in, raw image bytes out, in the
format the caller's Accept header asks for (huggingface_hub sends `image/png`; the hosted API's default was
JPEG)."""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from infergate.core.errors import NotAcceptableError, ValidationError
from infergate.core.requests import ImageRequest
from infergate.protocols.wire import Doc, NonBlank, OptionsField

__all__ = ["EXAMPLE", "MEDIA_TYPES", "TextToImageRequest", "choose_format", "parse_text_to_image"]

EXAMPLE = '{"inputs": "an astronaut riding a horse", "parameters": {"width": 512, "height": 512, "seed": 1}}'
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_BY_MEDIA_TYPE = {v: k for k, v in MEDIA_TYPES.items()} | {"image/jpg": "jpeg"}


class TextToImageParameters(Doc):
    negative_prompt: str | None = Field(None, description="what the image should not show")
    guidance_scale: float | None = Field(None, ge=0, le=100, description="how closely to follow the prompt")
    width: int | None = Field(None, ge=8, multiple_of=8, description="pixels, a multiple of 8")
    height: int | None = Field(None, ge=8, multiple_of=8, description="pixels, a multiple of 8")
    num_inference_steps: int | None = Field(None, ge=1, description="denoising steps")
    seed: int | None = Field(None, ge=0, lt=2**63, description="the same seed and prompt give the same image")
    scheduler: str | None = Field(None, description="a scheduler class compatible with the model's pipeline")


class TextToImageRequest(Doc):
    """text-to-image: the image's bytes, in the format the Accept header asks for (JPEG by default)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"inputs": "an astronaut riding a horse", "parameters": {"width": 512, "height": 512, "seed": 1}}
            ]
        }
    )
    inputs: NonBlank = Field(description="the prompt")
    parameters: TextToImageParameters | None = None
    options: OptionsField = None


def choose_format(accept: str | None) -> str:
    """The first image type the Accept header names that we encode; JPEG for none, `*/*` or `image/*`."""
    if not accept:
        return "jpeg"
    ranges = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    for media in ranges:
        if media in _BY_MEDIA_TYPE:
            return _BY_MEDIA_TYPE[media]
    if any(media in ("*/*", "image/*") for media in ranges):
        return "jpeg"
    raise NotAcceptableError(
        f"text-to-image answers {', '.join(MEDIA_TYPES.values())}; the Accept header asked for {accept!r}. "
        "Send `Accept: image/png` (or jpeg, webp), or no Accept header."
    )


def _number(params: dict[str, Any], name: str, kind: type) -> Any:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and not isinstance(value, int)):
        raise ValidationError(f"`parameters.{name}` must be a {kind.__name__}, not {value!r}. Example: {EXAMPLE}")
    return kind(value)


def parse_text_to_image(body: Any, accept: str | None) -> ImageRequest:
    if isinstance(body, str):
        body = {"inputs": body}
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), str) or not body["inputs"].strip():
        raise ValidationError(f"`inputs` must be the prompt, a non-empty string. Expected a body like {EXAMPLE}")
    params = body.get("parameters") or {}
    if not isinstance(params, dict):
        raise ValidationError(f"`parameters` must be an object. Expected a body like {EXAMPLE}")
    width, height = _number(params, "width", int), _number(params, "height", int)
    for name, value in (("width", width), ("height", height)):
        if value is not None and (value < 8 or value % 8):
            raise ValidationError(f"`parameters.{name}` must be a positive multiple of 8. Given: {value}")
    steps = _number(params, "num_inference_steps", int)
    if steps is not None and steps < 1:
        raise ValidationError("`parameters.num_inference_steps` must be at least 1")
    guidance = _number(params, "guidance_scale", float)
    if guidance is not None and not 0 <= guidance <= 100:
        raise ValidationError("`parameters.guidance_scale` must be between 0 and 100")
    seed = _number(params, "seed", int)
    if seed is not None and not 0 <= seed < 2**63:
        raise ValidationError("`parameters.seed` must be a non-negative integer")
    negative, scheduler = params.get("negative_prompt"), params.get("scheduler")
    for name, value in (("negative_prompt", negative), ("scheduler", scheduler)):
        if value is not None and not isinstance(value, str):
            raise ValidationError(f"`parameters.{name}` must be a string, not {value!r}")
    return ImageRequest(
        prompt=body["inputs"],
        negative_prompt=negative,
        guidance_scale=guidance,
        width=width,
        height=height,
        num_inference_steps=steps,
        seed=seed,
        scheduler=scheduler,
        format=choose_format(accept),
    )
