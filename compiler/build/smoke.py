"""A smoke build: the spec, trained for a handful of steps on its first examples, to check the whole pipeline
before the real run (`ftc run SPEC --smoke`).

It is compiled like any build, into build/<name>-smoke/ (project <name>-smoke), so that its lock, script and runs
(runs/<name>-smoke/) never touch the real ones; its lock carries "smoke" (`SmokePlan`), and its data/ holds the
subset it trains on. The inputs' hashes are the real files', so the smoke lock names the same data versions.
"""

from __future__ import annotations

from dataclasses import replace

from ftc.compiler.plan.model import SmokePlan
from ftc.compiler.spec.validate import LoadedSpec

SMOKE_SUFFIX = "-smoke"
DEFAULT_STEPS = 4
MIN_TRAIN_EXAMPLES = 32
VALIDATION_EXAMPLES = 8
SMOKE_NEW_TOKENS = 32  # tokens per held-out answer: enough to see the format, not a base model rambling


def smoke_name(name: str) -> str:
    return f"{name}{SMOKE_SUFFIX}"


def smoke_plan(loaded: LoadedSpec, steps: int) -> SmokePlan:
    """How a smoke build of `loaded` trains: `steps` steps on the first max(32, steps x batch) examples."""
    training = loaded.spec.training
    return SmokePlan(
        of_project=loaded.spec.project.name,
        steps=steps,
        train_examples=max(MIN_TRAIN_EXAMPLES, steps * training.batch_size),
        validation_examples=VALIDATION_EXAMPLES,
    )


def smoke_spec(loaded: LoadedSpec, smoke: SmokePlan) -> LoadedSpec:
    """The spec a smoke build compiles: its own project name, `steps` steps, a loss logged at every step,
    one evaluation and one checkpoint at the end, no early stopping and no trackers; answers of at most
    SMOKE_NEW_TOKENS tokens, and no gates, baselines or lm-eval tasks."""
    spec = loaded.spec
    training = spec.training.model_copy(update={
        "max_steps": smoke.steps, "logging_steps": 1, "eval_steps": smoke.steps, "save_steps": smoke.steps,
        "early_stopping_patience": None, "report_to": [],
    })
    project = spec.project.model_copy(update={"name": smoke_name(spec.project.name)})
    # a few short answers check that evaluation works; the gates, baselines and lm-eval tasks are the real run's
    evaluation = spec.evaluation.model_copy(update={
        "max_new_tokens": min(spec.evaluation.max_new_tokens, SMOKE_NEW_TOKENS), "gates": [], "baselines": [],
        "lm_eval_tasks": [],
    })
    return replace(loaded, spec=spec.model_copy(update={"project": project, "training": training, "evaluation": evaluation}))


def smoke_limit(smoke: SmokePlan, keys: list[str]) -> dict[str, int]:
    """The data files' keys -> how many of their first examples a smoke build reads."""
    return {key: smoke.train_examples if key == "train" else smoke.validation_examples for key in keys}
