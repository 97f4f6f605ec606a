"""[project]: what the build and its runs are called, and the seed everything derives from."""

from __future__ import annotations

from pydantic import Field

from ftc.compiler.schema import SpecModel


class Project(SpecModel):
    name: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
        description="Names build/<name>/ and runs/<name>/. Lowercase letters, digits, '.', '_' and '-'.",
    )
    seed: int = Field(
        default=42,
        ge=0,
        lt=2**32,
        description="Seed for data shuffling, the validation split, weight init of adapters and dropout.",
    )
    description: str | None = Field(default=None, description="Free text shown in `ftc plan`.")
