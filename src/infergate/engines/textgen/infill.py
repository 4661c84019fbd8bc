"""Code infilling formats: how a model family asks for the middle between a prefix and a suffix.

The format is recognised from the tokenizer's own special tokens, so any model of a family works without
configuration: Code Llama's `<PRE> {prefix} <SUF>{suffix} <MID>` (the announcement's example) ending with
`<EOT>`, StarCoder's `<fim_prefix>...<fim_suffix>...<fim_middle>`, and the `<|fim_prefix|>` family (Qwen2.5
Coder, DeepSeek style names aside) ending with their end-of-text token.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["FORMATS", "InfillFormat", "choose", "detect"]


@dataclass(frozen=True, slots=True)
class InfillFormat:
    name: str
    prefix: str
    suffix: str
    middle: str
    template: str  # with {prefix} and {suffix}
    end: str | None = None  # a token that ends the middle besides the model's EOS

    def prompt(self, prefix: str, suffix: str) -> str:
        return self.template.format(prefix=prefix, suffix=suffix)


FORMATS = (
    InfillFormat("codellama", "<PRE>", "<SUF>", "<MID>", "<PRE> {prefix} <SUF>{suffix} <MID>", end="<EOT>"),
    InfillFormat(
        "starcoder",
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
        "<fim_prefix>{prefix}<fim_suffix>{suffix}<fim_middle>",
    ),
    InfillFormat(
        "qwen",
        "<|fim_prefix|>",
        "<|fim_suffix|>",
        "<|fim_middle|>",
        "<|fim_prefix|>{prefix}<|fim_suffix|>{suffix}<|fim_middle|>",
        end="<|fim_pad|>",
    ),
)


def choose(setting: str, vocabulary: Collection[str]) -> InfillFormat | None:
    """The catalog entry's ``infill``: "auto" detects, "none" disables, a name must match the tokenizer."""
    if setting == "auto":
        return detect(vocabulary)
    if setting == "none":
        return None
    fmt = next(f for f in FORMATS if f.name == setting)
    missing = [t for t in (fmt.prefix, fmt.suffix, fmt.middle) if t not in vocabulary]
    if missing:
        raise ValueError(
            f"infill = {setting!r} needs the tokens {', '.join(missing)}, which this tokenizer lacks; set infill "
            '= "auto" (or "none") in the model\'s [[models]] entry'
        )
    return fmt


def detect(vocabulary: Collection[str]) -> InfillFormat | None:
    """The infill format whose three markers are all in the tokenizer's vocabulary, or None."""
    for fmt in FORMATS:
        if fmt.prefix in vocabulary and fmt.suffix in vocabulary and fmt.middle in vocabulary:
            return fmt
    return None
