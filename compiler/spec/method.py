"""[method]: how the weights are trained. A discriminated union on `kind`, made from the method registry
(ftc.compiler.methods), where each method declares its table."""

from __future__ import annotations

from ftc.compiler.methods import DEFAULT_TARGETS, METHOD_KINDS, Dpo, Full, Lora, LoraFields, Method, Qlora

__all__ = ["DEFAULT_TARGETS", "METHOD_KINDS", "Dpo", "Full", "Lora", "LoraFields", "Method", "Qlora"]
