"""The one base every plan model shares: frozen, unknown keys refused, and `None` left out where it means "absent".

A plan model is written into the lock and read back from it. Fields listed in `omit_when_none` are dropped from
the JSON while they are None (an optional section such as `inputs.reference_model`), so that the lock holds
what was resolved and nothing that was not; every other field is always written, None included.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_serializer

DEVICES = ("cpu", "cuda")


class PlanModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    omit_when_none: ClassVar[frozenset[str]] = frozenset()

    @model_serializer(mode="wrap")
    def _drop_absent(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        for name in self.omit_when_none:
            field = type(self).model_fields[name]
            key = field.serialization_alias or field.alias or name
            if data.get(key, 0) is None:
                del data[key]
        return data


def per_device(accelerator: str, cpu: Any, cuda: Any) -> dict[str, Any]:
    """A value that depends on the device the run lands on: both under accelerator = "auto", else the one in use."""
    table = {"cpu": cpu, "cuda": cuda}
    return table if accelerator == "auto" else {accelerator: table[accelerator]}
