"""Tool calls in the model's own words: the tools in the prompt, the grammar of a call, and calls parsed back.

The format is Hermes' (Qwen 2/2.5/3, Hermes, SmolLM3 and most open models trained for tools since): a call is
``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``. A chat template that renders tools in that
format (it mentions ``<tool_call>``) gets them through its ``tools`` argument; any other template gets them as a
system message in Qwen's words, so that every chat model is told the same format it is then held to.

When a call is required (``tool_choice`` "required" or a name) decoding is constrained to valid calls from the
first token. With "auto" the model writes freely until it opens a call; from the opening tag on, decoding is
constrained to a valid call of a listed function, so a call is never malformed (only cut short by
``max_tokens``, which is an error, never text passed on as an answer).
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from infergate.core.outputs import ToolCall
from infergate.core.requests import Grammar, ToolChoice
from infergate.engines.textgen.constrain import JSON_OPTIONS

__all__ = ["OPEN", "call_grammar", "parse_calls", "prepare_messages", "template_takes_tools"]

OPEN = "<tool_call>"
CLOSE = "</tool_call>"
_CALL = re.compile(re.escape(OPEN) + r"\s*(.*?)\s*" + re.escape(CLOSE), re.DOTALL)

_INSTRUCTIONS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{tools}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>'
)


def template_takes_tools(template: str | None) -> bool:
    """Whether the chat template renders tools, in the format parsed here."""
    return bool(template) and "tools" in str(template) and OPEN in str(template)


def prepare_messages(
    messages: list[dict[str, Any]], tools: tuple[dict[str, Any], ...], own_template: bool
) -> list[dict[str, Any]]:
    """The messages to render: an assistant's earlier calls with their arguments as objects (what templates
    expect); for a template that does not take tools, the tools in the system message and earlier calls in the
    assistant's text, in the format the model is asked to use."""
    out = []
    for message in messages:
        message = dict(message)
        calls = [_call_for_template(c) for c in message.get("tool_calls") or ()]
        if calls:
            message["tool_calls"] = calls
            if not own_template:
                text = "\n".join(f"{OPEN}\n{json.dumps(c['function'])}\n{CLOSE}" for c in calls)
                message["content"] = "\n".join(p for p in (message.get("content") or "", text) if p)
                del message["tool_calls"]
        out.append(message)
    if own_template or not tools:
        return out
    listed = "\n".join(json.dumps(t) for t in tools)
    instructions = _INSTRUCTIONS.format(tools=listed)
    if out and out[0].get("role") == "system":
        out[0] = {**out[0], "content": f"{out[0].get('content') or ''}\n\n{instructions}".lstrip()}
    else:
        out.insert(0, {"role": "system", "content": instructions})
    return out


def _call_for_template(call: dict[str, Any]) -> dict[str, Any]:
    function = dict(call.get("function") or {})
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            function["arguments"] = json.loads(arguments)
        except ValueError:
            pass  # a template shows it as it came
    return {**call, "function": function}


def call_grammar(tools: tuple[dict[str, Any], ...], choice: ToolChoice) -> Grammar:
    """The grammar of the calls a request may make: one call (or, with parallel calls, several in a row) of a
    listed function (or the named one), its arguments valid against that function's parameters."""
    functions = [t.get("function") or {} for t in tools]
    if choice.name is not None:
        functions = [f for f in functions if f.get("name") == choice.name]
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": f["name"]}, "arguments": f.get("parameters") or {"type": "object"}},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in functions
    ]
    schema = {**(options[0] if len(options) == 1 else {"anyOf": options}), "x-guidance": JSON_OPTIONS}
    calls = 'call ("\\n" call)*' if choice.parallel else "call"
    lark = f'start: {calls}\ncall: "{OPEN}\\n" body "\\n{CLOSE}"\nbody: %json {json.dumps(schema)}\n'
    return Grammar("lark", lark, "tools")


def parse_calls(text: str) -> tuple[list[ToolCall], bool]:
    """The complete calls in a model's text (from its first opening tag on), and whether that is all of it (False:
    the text ends in a call cut short, or has one that is not a JSON object with a name)."""
    calls: list[ToolCall] = []
    found = _CALL.findall(text)
    for body in found:
        try:
            call = json.loads(body)
        except ValueError:
            return calls, False
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            return calls, False
        arguments = call.get("arguments", call.get("parameters", {}))
        calls.append(ToolCall(f"call_{uuid.uuid4().hex[:24]}", call["name"], json.dumps(arguments)))
    return calls, len(found) == text.count(OPEN)
