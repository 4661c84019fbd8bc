"""How each pipeline task runs: transformers' own pipeline where it still has one (fill-mask, text and token
classification, zero-shot), and a few lines over the model where transformers 5 removed it (extractive
question answering; summarization, translation and text2text, which are one seq2seq `generate`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["LoadedTask", "load_task"]


@dataclass
class LoadedTask:
    run: Callable[[Any, dict[str, Any]], Any]  # (inputs, parameters) -> the task's answer
    device: str
    modules: list[Any]  # the torch modules that hold the weights


_PIPELINES = ("fill-mask", "text-classification", "token-classification", "zero-shot-classification")
_SEQ2SEQ_KEY = {
    "summarization": "summary_text",
    "translation": "translation_text",
    "text2text-generation": "generated_text",
}


def load_task(task: str, location: str, kwargs: dict[str, Any], device: str) -> LoadedTask:
    from transformers import AutoModelForQuestionAnswering, AutoModelForSeq2SeqLM, AutoTokenizer, pipeline

    if task in _PIPELINES:
        build: Any = pipeline  # its overloads want a literal task name
        pipe = build(task, model=location, tokenizer=location, device=device, model_kwargs=kwargs)
        return LoadedTask(lambda inputs, params: pipe(inputs, **params), str(pipe.device), [pipe.model])
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    if task == "question-answering":
        qa = AutoModelForQuestionAnswering.from_pretrained(location, **kwargs).to(device).eval()
        return LoadedTask(lambda inputs, params: _answer(qa, tokenizer, inputs, **params), device, [qa])
    if task in _SEQ2SEQ_KEY:
        model = AutoModelForSeq2SeqLM.from_pretrained(location, **kwargs).to(device).eval()
        key = _SEQ2SEQ_KEY[task]
        return LoadedTask(lambda inputs, params: _generate(model, tokenizer, key, inputs, params), device, [model])
    raise ValueError(f"{task!r} is not a pipeline task")


def _generate(model: Any, tokenizer: Any, key: str, text: str, params: dict[str, Any]) -> list[dict[str, str]]:
    params = dict(params)
    clean = params.pop("clean_up_tokenization_spaces", True)
    for name in ("src_lang", "tgt_lang"):  # for multilingual tokenizers only; ignored here
        params.pop(name, None)
    encoded = tokenizer(text, return_tensors="pt", truncation=True, return_token_type_ids=False).to(model.device)
    out = model.generate(**encoded, **params)
    return [{key: tokenizer.decode(out[0], skip_special_tokens=True, clean_up_tokenization_spaces=clean)}]


def _answer(
    model: Any,
    tokenizer: Any,
    inputs: dict[str, str],
    top_k: int = 1,
    max_answer_len: int = 15,
    max_question_len: int = 64,
    doc_stride: int = 128,
    handle_impossible_answer: bool = False,
) -> dict[str, Any] | list[dict[str, Any]]:
    """The best spans of the context (start <= end, at most ``max_answer_len`` tokens), scored by the product
    of their start and end probabilities, as the removed question-answering pipeline did."""
    import torch

    question, context = inputs["question"], inputs["context"]
    encoded = tokenizer(question, context, return_tensors="pt", truncation="only_second", return_offsets_mapping=True)
    offsets = encoded.pop("offset_mapping")[0].tolist()
    in_context = [s == 1 for s in encoded.sequence_ids(0)]
    with torch.inference_mode():
        out = model(**encoded.to(model.device))
    start = torch.softmax(out.start_logits[0].float(), -1)
    end = torch.softmax(out.end_logits[0].float(), -1)
    scores = torch.triu(start[:, None] * end[None, :]).tril(max_answer_len - 1)
    mask = torch.tensor(in_context, device=scores.device)
    scores = scores * mask[:, None] * mask[None, :]
    best = torch.topk(scores.flatten(), min(top_k, int(mask.sum()) ** 2 or 1))
    width = scores.shape[1]
    answers = []
    for score, index in zip(best.values.tolist(), best.indices.tolist(), strict=True):
        i, j = divmod(index, width)
        a, b = offsets[i][0], offsets[j][1]
        answers.append({"answer": context[a:b], "score": score, "start": a, "end": b})
    if handle_impossible_answer:
        null = float(start[0] * end[0])
        answers.append({"answer": "", "score": null, "start": 0, "end": 0})
        answers.sort(key=lambda x: -x["score"])
        answers = answers[:top_k]
    return answers[0] if top_k == 1 else answers
