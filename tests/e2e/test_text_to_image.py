"""Text-to-image as the announcement's SDXL example calls it (`InferenceClient.text_to_image`), on a tiny
Stable Diffusion pipeline of random parts built from configs and loaded through the real diffusers path: raw
image bytes in the format Accept asks for, seeds that repeat images, the parameters honoured, the tier's
bounds enforced with clear errors."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pytest
from huggingface_hub import InferenceClient
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image

from tests.support.server import CHAT_MODEL_LAZY_OPEN_ANONYMOUS, Server, new_user_token, serving
from tests.support.tiny_models import build_text_to_image

IMAGE_ID = "tiny/stable-diffusion"
PROMPT = "a dark gothic city in a misty night"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    pipeline = build_text_to_image(tmp_path_factory.mktemp("tiny-sd"))
    config = (
        CHAT_MODEL_LAZY_OPEN_ANONYMOUS
        + f"""
[tiers.free]
max_image_size = 128
max_inference_steps = 4

[[models]]
id = "{IMAGE_ID}"
task = "text-to-image"
source = "{pipeline}"
"""
    )
    yield from serving(tmp_path_factory.mktemp("text-to-image"), config)


@pytest.fixture
def hub(server: Server) -> InferenceClient:
    headers = {"x-wait-for-model": "true", "x-use-cache": "0"}
    return InferenceClient(model=f"{server.base_url}/models/{IMAGE_ID}", timeout=120, headers=headers)


def post(server: Server, parameters: dict[str, object], **headers: str) -> httpx.Response:
    body = {"inputs": PROMPT, "parameters": parameters}
    # PNG unless asked otherwise: lossless, so that a small change in the image shows in the bytes.
    headers = {"x-wait-for-model": "true", "x-use-cache": "0", "accept": "image/png", **headers}
    return httpx.post(f"{server.base_url}/models/{IMAGE_ID}", json=body, headers=headers, timeout=120)


def test_the_client_gets_an_image_of_the_size_asked(hub: InferenceClient) -> None:
    image = hub.text_to_image(PROMPT, width=64, height=48, num_inference_steps=2, guidance_scale=9)
    assert isinstance(image, Image.Image)
    assert image.size == (64, 48)
    assert image.format == "PNG"  # the client asks for image/png


def test_the_same_seed_gives_the_same_image_and_another_seed_another(server: Server) -> None:
    params = {"width": 64, "height": 64, "num_inference_steps": 2, "seed": 7, "negative_prompt": "blurry"}
    first, again = post(server, params), post(server, params)
    assert first.status_code == 200, first.text
    assert first.content == again.content
    assert first.headers["x-seed"] == "7"
    other = post(server, {**params, "seed": 8})
    assert other.content != first.content
    # Without a seed one is drawn and returned, so the image can be made again.
    drawn = post(server, {"width": 64, "height": 64, "num_inference_steps": 2})
    seed = int(drawn.headers["x-seed"])
    assert post(server, {"width": 64, "height": 64, "num_inference_steps": 2, "seed": seed}).content == drawn.content


def test_parameters_change_the_image(server: Server) -> None:
    base = {"width": 64, "height": 64, "num_inference_steps": 2, "seed": 3}
    plain = post(server, base).content
    assert post(server, {**base, "guidance_scale": 1.5}).content != plain
    assert post(server, {**base, "negative_prompt": "sunny beach"}).content != plain
    assert post(server, {**base, "num_inference_steps": 3}).content != plain
    ddim = post(server, {**base, "scheduler": "DDIMScheduler"})
    assert ddim.status_code == 200 and ddim.content != plain
    unknown = post(server, {**base, "scheduler": "MagicScheduler"})
    assert unknown.status_code == 422
    assert "`scheduler` 'MagicScheduler' cannot drive this model; use one of" in unknown.json()["error"]
    assert "DDIMScheduler" in unknown.json()["error"]


def test_accept_chooses_the_format(server: Server) -> None:
    params = {"width": 64, "height": 64, "num_inference_steps": 1, "seed": 1}
    for accept, media_type, pil_format in [
        ("image/png", "image/png", "PNG"),
        ("image/webp", "image/webp", "WEBP"),
        ("image/jpeg", "image/jpeg", "JPEG"),
        ("*/*", "image/jpeg", "JPEG"),  # the hosted API's default
    ]:
        r = post(server, params, accept=accept)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == media_type
        assert Image.open(io.BytesIO(r.content)).format == pil_format
    refused = post(server, params, accept="application/json")
    assert refused.status_code == 406
    assert "Send `Accept: image/png`" in refused.json()["error"]


def test_sizes_and_steps_are_checked_with_the_tiers_bounds(server: Server) -> None:
    for params, status, expected in [
        ({"width": 60}, 422, "`parameters.width` must be a positive multiple of 8. Given: 60"),
        ({"height": 2048}, 422, "`parameters.height` must be <= 1536 on the anonymous tier. Given: 2048"),
        ({"num_inference_steps": 101}, 422, "`parameters.num_inference_steps` must be <= 100 on the anonymous tier"),
        ({"guidance_scale": "high"}, 422, "`parameters.guidance_scale` must be a float"),
    ]:
        r = post(server, params)
        assert r.status_code == status, (params, r.text)
        assert expected in r.json()["error"], params


def test_a_tier_can_have_smaller_bounds(server: Server) -> None:
    token = new_user_token(server, "painter", "free")
    r = post(server, {"width": 256, "num_inference_steps": 1}, authorization=f"Bearer {token}")
    assert r.status_code == 422
    assert "`parameters.width` must be <= 128 on the free tier. Given: 256" in r.json()["error"]
    with pytest.raises(HfHubHTTPError):
        InferenceClient(model=f"{server.base_url}/models/{IMAGE_ID}", token=token).text_to_image(
            PROMPT, num_inference_steps=5
        )
