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

from infergate.core.errors import ValidationError
from infergate.core.requests import ImageRequest
from infergate.core.tasks import TEXT_TO_IMAGE
from infergate.engines.base import WorkerEngine
from infergate.engines.pool import ModelPool
from infergate.engines.sources import resolve_source

__all__ = ["DiffusionEngine", "load_diffusion_pipeline"]

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


class DiffusionEngine(WorkerEngine):
    tasks = frozenset({TEXT_TO_IMAGE})

    def __init__(
        self,
        model_id: str,
        source: str,
        *,
        max_waiting: int = 16,
        threads: int | None = None,
        loader: Any = load_diffusion_pipeline,
        pool: ModelPool | None = None,
    ) -> None:
        super().__init__(model_id, source, estimate_s=10.0, max_waiting=max_waiting, pool=pool)
        self._threads = threads
        self._loader = loader

    def _build(self) -> tuple[Any, str]:
        pipe = self._loader(self.source, self._threads)
        return pipe, str(pipe.device)

    def _modules(self, model: Any) -> list[Any]:
        import torch

        return [c for c in model.components.values() if isinstance(c, torch.nn.Module)]

    async def text_to_image(self, request: ImageRequest) -> tuple[bytes, int]:
        pipe = self._check_ready()
        scheduler = self._scheduler(pipe, request.scheduler)  # an unknown name fails here, before the queue
        seed = request.seed if request.seed is not None else random.randrange(2**32)
        result: tuple[bytes, int] = await self._worker.submit((request, seed, scheduler))
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

    def _run_batch(self, jobs: list[tuple[ImageRequest, int, Any]]) -> list[Any]:
        pipe = self._loaded_model()
        return [self._draw(pipe, *job) for job in jobs]

    def _draw(self, pipe: Any, request: ImageRequest, seed: int, scheduler: Any) -> tuple[bytes, int]:
        import torch

        default = pipe.scheduler
        pipe.scheduler = scheduler
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
