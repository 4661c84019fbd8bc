"""LangChain's Hugging Face integration (`langchain-huggingface` 1.2.3, on huggingface_hub 1.x) against infergate,
run with .venv-langchain-hf's Python.

Usage: run.py BASE_URL CHAT_MODEL_ID EMBED_MODEL_ID. Prints one JSON object: case name -> result, or
{"error": "Type: message"}.

What it sends: `HuggingFaceEndpoint(endpoint_url=URL)` wraps `InferenceClient(model=URL)` and calls
`text_generation(prompt, max_new_tokens, top_k, top_p=0.95, typical_p=0.95, temperature=0.8, return_full_text=False,
stop=[], do_sample, watermark=False, ...)`: POST URL {"inputs", "parameters"} (+ "stream": true). It sends no token to
a URL that is not Hugging Face's, but huggingface_hub adds HF_TOKEN from the environment anyway (the test clears
it). `ChatHuggingFace(llm=that)` calls `chat_completion(messages, model=URL, temperature, max_tokens, stop, n,
stream)`: POST URL/v1/chat/completions with "model": "dummy". `HuggingFaceEndpointEmbeddings` refuses a URL
(`model` must be a repo id), so it cannot be pointed at a self-hosted server without replacing its client."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # script_support.py
from huggingface_hub import InferenceClient
from langchain_core.messages import HumanMessage
from langchain_huggingface import ChatHuggingFace, HuggingFaceEndpoint, HuggingFaceEndpointEmbeddings
from script_support import attempt  # noqa: E402

PROMPT = "The capital of France is"
QUESTION = [HumanMessage(content="What is the capital of France? Answer in one sentence.")]


def main() -> None:
    base, chat_id, embed_id = sys.argv[1:4]
    results: dict[str, Any] = {}
    llm = HuggingFaceEndpoint(endpoint_url=f"{base}/models/{chat_id}", max_new_tokens=8, timeout=120)
    attempt(results, "llm_invoke", lambda: llm.invoke(PROMPT))
    attempt(results, "llm_stream", lambda: list(llm.stream(PROMPT)))
    greedy = HuggingFaceEndpoint(
        endpoint_url=f"{base}/models/{chat_id}",
        max_new_tokens=12,
        do_sample=False,
        temperature=None,
        top_p=None,
        typical_p=None,
        stop_sequences=["."],
        timeout=120,
    )
    attempt(results, "llm_invoke_greedy_stop", lambda: greedy.invoke(PROMPT))

    chat = ChatHuggingFace(llm=llm)
    attempt(results, "chat_invoke", lambda: chat.invoke(QUESTION).model_dump(mode="json"))
    attempt(
        results, "chat_stream", lambda: [c.model_dump(mode="json") for c in chat.stream(QUESTION, stream_usage=True)]
    )

    attempt(
        results,
        "embeddings_url",
        lambda: type(HuggingFaceEndpointEmbeddings(model=f"{base}/models/{embed_id}")).__name__,
    )

    def embed_with_replaced_client() -> dict[str, Any]:
        embeddings = HuggingFaceEndpointEmbeddings(model=embed_id)
        embeddings.client = InferenceClient(model=f"{base}/models/{embed_id}", timeout=120)
        documents = embeddings.embed_documents(["a cat", "a dog"])
        return {"documents": documents, "query": embeddings.embed_query("a cat")}

    attempt(results, "embeddings_replaced_client", embed_with_replaced_client)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
