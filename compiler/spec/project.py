"""[project]: what the build and its runs are called, and the seed everything derives from."""

from __future__ import annotations

from pydantic import Field, field_validator

from ftc.compiler.schema import SpecModel, free_text

NAME_LIMIT = 64  # characters of project.name
DESCRIPTION_LIMIT = 2000  # characters of project.description


class Project(SpecModel):
    name: str = Field(
        pattern=rf"^[a-z0-9][a-z0-9._-]{{0,{NAME_LIMIT - 1}}}$",
        description=(
            f"Names build/<name>/ and runs/<name>/. Up to {NAME_LIMIT} lowercase letters, digits, '.', '_' and '-', "
            "starting with a letter or digit."
        ),
    )
    seed: int = Field(
        default=42,
        ge=0,
        lt=2**32,
        description="Seed for data shuffling, the validation split, weight init of adapters and dropout.",
    )
    description: str | None = Field(
        default=None,
        max_length=DESCRIPTION_LIMIT,
        description=f"Free text shown in `ftc plan`, up to {DESCRIPTION_LIMIT} characters.",
    )

    _check_description = field_validator("description")(free_text)
