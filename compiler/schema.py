"""The one base every spec model shares (the [table] models under compiler/spec/ and each method's table under
compiler/methods/): unknown keys are errors, values are frozen. It sits outside both packages so that either can
import it first."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class SpecModel(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        validate_default=True,
        use_attribute_docstrings=False,
    )


def env_var_name(value: str | None) -> str | None:
    """Validate that a secret is referenced by environment variable *name*, never written literally."""
    if value is None:
        return None
    if not ENV_NAME.match(value):
        raise ValueError(
            "must be the NAME of an environment variable in upper case (e.g. HF_TOKEN), not the secret itself"
        )
    return value
