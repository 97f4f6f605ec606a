"""The spec: one frozen pydantic model per TOML table, assembled into `Spec`."""

from __future__ import annotations

from pydantic import Field

from ftc.compiler.schema import SpecModel
from ftc.compiler.spec.data import Data
from ftc.compiler.spec.evaluation import Evaluation
from ftc.compiler.spec.export import Export
from ftc.compiler.spec.hardware import Hardware
from ftc.compiler.spec.method import METHOD_KINDS, Dpo, Full, Lora, Method, Qlora
from ftc.compiler.spec.model import Model
from ftc.compiler.spec.project import Project
from ftc.compiler.spec.serve import Serve
from ftc.compiler.spec.training import Training


class Spec(SpecModel):
    project: Project = Field(description="Names and seeds the build.")
    model: Model = Field(description="The base model.")
    data: Data = Field(description="The examples.")
    method: Method = Field(description="How the weights are trained; `kind` picks the method.")
    training: Training = Field(default_factory=Training, description="The optimisation loop.")
    hardware: Hardware = Field(default_factory=Hardware, description="Where it runs.")
    evaluation: Evaluation = Field(default_factory=Evaluation, description="Base versus tuned comparison.")
    serve: Serve = Field(default_factory=Serve, description="The OpenAI-compatible endpoint.")
    export: Export | None = Field(default=None, description="Quantized files `ftc export` writes, each behind a parity gate.")


__all__ = [
    "METHOD_KINDS",
    "Data",
    "Dpo",
    "Evaluation",
    "Export",
    "Full",
    "Hardware",
    "Lora",
    "Method",
    "Model",
    "Project",
    "Qlora",
    "Serve",
    "Spec",
    "SpecModel",
    "Training",
]
