"""TGI's Python client (`text-generation` 0.7.0) against infergate, run with .venv-tgi's Python.

Usage: run.py BASE_URL MODEL_ID TOKEN. Prints one JSON object: case name -> what the client returned, or
{"error": "Type: message"} where it raised. The pytest side (tests/e2e/test_clients_python.py) asserts on it.

What the client sends (text_generation/client.py): `generate` and `generate_stream` POST to the base URL itself
(no /generate suffix) a body {"inputs", "parameters": {...every field, nulls included, "details": true,
"stop": [], "watermark": false, ...}, "stream": bool} and read the answer as a list (payload[0]) or as SSE lines
`data:{StreamResponse}`; `chat` POSTs {base}/v1/chat/completions with "model": "tgi" and every field, nulls
included."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # script_support.py
from script_support import attempt  # noqa: E402
from text_generation import AsyncClient, Client
from text_generation.types import Message

PROMPT = "The capital of France is"


def response_json(r: Any) -> dict[str, Any]:
    out: dict[str, Any] = r.model_dump(mode="json")
    return out


def main() -> None:
    base, model_id, token = sys.argv[1:4]
    headers = {"Authorization": f"Bearer {token}"}
    url = f"{base}/models/{model_id}"
    client = Client(url, headers=headers, timeout=120)
    results: dict[str, Any] = {}

    attempt(results, "generate", lambda: response_json(client.generate(PROMPT, max_new_tokens=6)))
    attempt(
        results,
        "generate_stop",
        lambda: response_json(client.generate(PROMPT, max_new_tokens=12, stop_sequences=["."])),
    )
    attempt(
        results,
        "generate_seeded",
        lambda: [
            response_json(client.generate(PROMPT, max_new_tokens=6, do_sample=True, temperature=0.9, top_k=50, seed=7))
            for _ in range(2)
        ],
    )
    attempt(
        results,
        "generate_best_of",
        lambda: response_json(client.generate(PROMPT, max_new_tokens=4, do_sample=True, best_of=2)),
    )
    attempt(
        results,
        "generate_prefill_top_tokens",
        lambda: response_json(client.generate(PROMPT, max_new_tokens=3, decoder_input_details=True, top_n_tokens=2)),
    )
    attempt(results, "generate_invalid", lambda: response_json(client.generate(PROMPT, top_n_tokens=50)))
    attempt(
        results,
        "generate_stream",
        lambda: [response_json(r) for r in client.generate_stream(PROMPT, max_new_tokens=6)],
    )
    root = Client(base, headers=headers, timeout=120)  # POST /: the first catalog model
    attempt(
        results, "root_generate", lambda: response_json(root.generate(PROMPT, max_new_tokens=4, return_full_text=True))
    )

    async def run_async() -> dict[str, Any]:
        aclient = AsyncClient(url, headers=headers, timeout=120)
        generated = await aclient.generate(PROMPT, max_new_tokens=4)
        streamed = [response_json(r) async for r in aclient.generate_stream(PROMPT, max_new_tokens=4)]
        return {"generate": response_json(generated), "stream": streamed}

    attempt(results, "async", lambda: asyncio.run(run_async()))

    question = [Message(role="user", content="What is the capital of France? Answer in one sentence.")]
    attempt(results, "chat", lambda: response_json(client.chat(messages=question, max_tokens=6, temperature=0.0)))
    attempt(
        results,
        "chat_stream",
        lambda: [response_json(c) for c in client.chat(messages=question, max_tokens=4, stream=True)],
    )
    print(json.dumps(results))


if __name__ == "__main__":
    main()
