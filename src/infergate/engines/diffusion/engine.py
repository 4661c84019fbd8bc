"""DiffusionEngine: a diffusers text-to-image pipeline (Stable Diffusion, SDXL, ...) behind the gateway.

One image at a time on a worker thread (a denoising loop keeps the cores busy on its own). A seed makes the
image reproducible: each call gets its own generator; without one a random seed is drawn and returned, so
the caller can repeat the image. ``scheduler`` names one of the pipeline's compatible schedulers, built from
the pipeline's own scheduler config for that call only.
"""

from __future__ import annotations

import io
import random
from typing import Any

from infergate.core.engine import EngineState, EngineStats
from infergate.core.errors import ShuttingDownError, ValidationError
from infergate.core.requests import ImageRequest
from infergate.core.tasks import TEXT_TO_IMAGE
from infergate.engines.lifecycle import ModelLoad
from infergate.engines.sources import resolve_source
from infergate.engines.worker import BatchWorker

__all__ = ["DiffusionEngine", "load_diffusion_pipeline"]

_DEFAULT_LOAD_ESTIMATE_S = 10.0
_PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}


def load_diffusion_pipeline(source: str, threads: int | None) -> Any:
    import torch
    from diffusers import DiffusionPipeline

    if threads:
        torch.set_num_threads(threads)
    location, _ = resolve_source(source)
    on_gpu = torch.cuda.is_available()
    pipe = DiffusionPipeline.from_pretrained(location, torch_dtype=torch.float16 if on_gpu else torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to("cuda" if on_gpu else "cpu")


class DiffusionEngine:
    tasks = frozenset({TEXT_TO_IMAGE})

    def __init__(
        self,
        model_id: str,
        source: str,
        *,
        max_waiting: int = 16,
        threads: int | None = None,
        loader: Any = load_diffusion_pipeline,
    ) -> None:
        self.model_id = model_id
        self.source = source
        self.compute_type = "cpu"
        self._threads = threads
        self._loader = loader
        self._pipe: Any = None
        self._life = ModelLoad(model_id, source, self._load, _DEFAULT_LOAD_ESTIMATE_S)
        self._worker = BatchWorker(f"diffusion:{model_id}", self._run_batch, max_batch=1, max_waiting=max_waiting)
        self._stopping = False

    def start(self) -> None:
        if self._life.status != "idle":
            return
        self._stopping = False
        self._life.begin()
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        self._worker.stop()
        self._life.stopped()

    def _load(self) -> str:
        pipe = self._loader(self.source, self._threads)
        self.compute_type = "gpu" if pipe.device.type == "cuda" else "cpu"
        self._pipe = pipe
        return str(pipe.device)

    def state(self) -> EngineState:
        return self._life.state()

    def stats(self) -> EngineStats:
        return EngineStats(active=self._worker.active, waiting=self._worker.waiting)

    async def wait_ready(self, timeout: float) -> None:
        await self._life.wait(timeout)
        self._check_ready()

    def _check_ready(self) -> Any:
        self._life.check()
        if self._stopping or self._pipe is None:
            raise ShuttingDownError()
        return self._pipe

    async def text_to_image(self, request: ImageRequest) -> tuple[bytes, int]:
        pipe = self._check_ready()
        self._scheduler(pipe, request.scheduler)  # an unknown name fails here, before waiting in the queue
        seed = request.seed if request.seed is not None else random.randrange(2**32)
        result: tuple[bytes, int] = await self._worker.submit((request, seed))
        return result

    @staticmethod
    def _scheduler(pipe: Any, name: str | None) -> Any:
        if name is None:
            return pipe.scheduler
        compatible = {cls.__name__: cls for cls in pipe.scheduler.compatibles}
        if name not in compatible:
            raise ValidationError(
                f"`scheduler` {name!r} cannot drive this model; use one of {', '.join(sorted(compatible))}"
            )
        return compatible[name].from_config(pipe.scheduler.config)

    def _run_batch(self, jobs: list[tuple[ImageRequest, int]]) -> list[tuple[bytes, int]]:
        return [self._draw(request, seed) for request, seed in jobs]

    def _draw(self, request: ImageRequest, seed: int) -> tuple[bytes, int]:
        import torch

        pipe = self._pipe
        default = pipe.scheduler
        pipe.scheduler = self._scheduler(pipe, request.scheduler)
        options = {
            "negative_prompt": request.negative_prompt,
            "guidance_scale": request.guidance_scale,
            "width": request.width,
            "height": request.height,
            "num_inference_steps": request.num_inference_steps,
        }
        try:
            with torch.inference_mode():
                image = pipe(
                    request.prompt,
                    generator=torch.Generator(device=pipe.device).manual_seed(seed),
                    **{k: v for k, v in options.items() if v is not None},
                ).images[0]
        finally:
            pipe.scheduler = default
        out = io.BytesIO()
        image.save(out, format=_PIL_FORMATS[request.format])
        return out.getvalue(), seed
