"""Images per second at 64x64 on the tiny random Stable Diffusion pipeline the tests use (no real diffusion
model ships as a package), over HTTP against diffusers called in process, plus the model's first load.

    .venv/bin/python bench/text_to_image.py [--images 20] [--steps 4] [--json]

What it measures is the serving path's cost around a denoising loop (load, queue, encode, HTTP), not a real
model's speed: a real SDXL step is thousands of times this one's work.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' tiny model builder

from tests.support.tiny_models import build_text_to_image  # noqa: E402

from infergate.benchmarks.engine import free_port, print_measures, rss_mb, wait_healthy  # noqa: E402

MODEL = "tiny/stable-diffusion"
PROMPT = "a dark gothic city in a misty night"


def _in_process(pipeline: Path, images: int, steps: int) -> float:
    import torch
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(pipeline)
    pipe.set_progress_bar_config(disable=True)
    pipe(PROMPT, width=64, height=64, num_inference_steps=steps)
    t0 = time.perf_counter()
    for seed in range(images):
        image = pipe(
            PROMPT, width=64, height=64, num_inference_steps=steps, generator=torch.Generator().manual_seed(seed)
        ).images[0]
        image.save(open(os.devnull, "wb"), format="PNG")
    return images / (time.perf_counter() - t0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="infergate-bench-"))
    pipeline = build_text_to_image(home / "model")
    config = home / "config.toml"
    config.write_text(
        "[tiers.anonymous]\nrequests = 1000000\nconcurrent = 64\n\n"
        f'[[models]]\nid = "{MODEL}"\ntask = "text-to-image"\nsource = "{pipeline}"\nload_at_startup = false\n'
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "infergate", "--config", str(config), "serve", "--port", str(port)],
        env={**os.environ, "INFERGATE_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    rows: dict[str, float] = {}
    headers = {"x-use-cache": "0", "x-wait-for-model": "1", "accept": "image/png"}
    try:
        wait_healthy(proc, base, "run `infergate serve` by hand to see why")
        with httpx.Client(base_url=base, timeout=300, headers=headers) as client:

            def draw(seed: int) -> None:
                body = {"inputs": PROMPT, "parameters": {"width": 64, "height": 64, "num_inference_steps": args.steps}}
                body["parameters"]["seed"] = seed  # type: ignore[index]
                client.post(f"/models/{MODEL}", json=body).raise_for_status()

            t0 = time.perf_counter()
            draw(0)
            rows["first request, model load included (s)"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            for seed in range(args.images):
                draw(seed)
            rows[f"HTTP, 64x64, {args.steps} steps (images/s)"] = args.images / (time.perf_counter() - t0)
        rows["server resident memory, peak (MB)"] = rss_mb(proc.pid, "VmHWM")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    rows[f"diffusers in process, 64x64, {args.steps} steps (images/s)"] = _in_process(pipeline, args.images, args.steps)
    print_measures("model: tiny random Stable Diffusion (tests)", rows, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
