"""Code infilling formats: how a model family asks for the middle between a prefix and a suffix.

The format is recognised from the tokenizer's own special tokens, so any model of a family works without
configuration: Code Llama's `<PRE> {prefix} <SUF>{suffix} <MID>` (the announcement's example) ending with
`<EOT>`, StarCoder's `<fim_prefix>...<fim_suffix>...<fim_middle>`, and the `<|fim_prefix|>` family (Qwen2.5
Coder, DeepSeek style names aside) ending with their end-of-text token.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

__all__ = ["FORMATS", "InfillFormat", "detect"]


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


def detect(vocabulary: Collection[str]) -> InfillFormat | None:
    """The infill format whose three markers are all in the tokenizer's vocabulary, or None."""
    for fmt in FORMATS:
        if fmt.prefix in vocabulary and fmt.suffix in vocabulary and fmt.middle in vocabulary:
            return fmt
    return None
