"""`ftc data check`: every bad example as file:line, then a summary of the data as it will train. `ftc data convert`:
a data file to OpenAI's fine-tuning formats or back to ftc's (compiler/data/openai.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ftc.cli.common import UsageError, display, err, out, progress, report, spec_path
from ftc.cli.datalogs import add_from_logs, add_synthesize
from ftc.compiler.diagnostics import errors, read_source
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS
from ftc.compiler.spec.checks import lines_of

SHOWN_PROBLEMS = 50  # problems printed before "and N more": the full list is in --json
SHOWN_GROUPS = 5  # duplicate groups, and labels, printed before "and N more"


def add_data(verbs) -> None:
    p = verbs.add_parser(
        "data",
        help="check a spec's data (every bad example as file:line, and a summary), convert a data file, or add "
        "examples from served logs or a teacher model",
    )
    actions = p.add_subparsers(dest="data_verb", metavar="ACTION", required=True)
    p = actions.add_parser(
        "check",
        help="check every example of the spec's data and summarise it (the checks `ftc compile` runs)",
        description=(
            "Check every example of SPEC's data files against its format, tokenize it with the chat template the "
            "build would lock, and report every problem as file:line: reason. Then summarise: examples per split, "
            "tokens per example (min, median, p95, max, histogram), what max_length would cut, turns per "
            "conversation, duplicates, label balance, tokens that carry loss, and padding waste. "
            "Exit 1 when there are problems."
        ),
    )
    p.add_argument("spec", help="the spec file, e.g. specs/quickstart.toml")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_data_check)
    p = actions.add_parser(
        "convert",
        help="convert a data file to OpenAI's fine-tuning JSONL (SFT, DPO) or back to ftc's formats",
        description=(
            "Convert IN (.jsonl, .json, .csv or .parquet) into OUT (.jsonl, one record a line), written whole or "
            "not at all. --to openai: chat records become SFT records ({\"messages\"}, weights kept) and preference "
            "records DPO records ({\"input\", \"preferred_output\", \"non_preferred_output\"}); string prompts "
            "and answers, and completion records, are wrapped into user and assistant messages, so converting back "
            "gives message lists, not the strings. Unpaired (KTO) and text data have no OpenAI format. --to ftc: "
            "SFT records become chat records and DPO records preference records. OpenAI lines keep OpenAI's key "
            "order (role, content, weight), ftc lines sorted keys, so openai -> ftc -> openai gives the same bytes. "
            "A record that cannot be converted is listed as file:line and nothing is written (exit 1)."
        ),
    )
    p.add_argument("input", metavar="IN", help="the data file to convert")
    p.add_argument("--to", required=True, choices=("openai", "ftc"), help="the formats to write: OpenAI's or ftc's")
    p.add_argument("--out", required=True, metavar="OUT", help="the .jsonl file to write (never IN itself)")
    p.set_defaults(func=cmd_data_convert)
    add_from_logs(actions)
    add_synthesize(actions)


def cmd_data_convert(args: argparse.Namespace) -> int:
    from ftc.compiler.data.openai import convert_file
    from ftc.compiler.data.read import SUFFIXES

    source, target = Path(args.input), Path(args.out)
    if not source.is_file():
        raise UsageError(f"{args.input} is not a file" if source.exists() else f"data file not found: {args.input}")
    if source.suffix not in SUFFIXES:
        kinds = ".jsonl, .json, .csv or .parquet"
        raise UsageError(f"{args.input}: unsupported data file type {source.suffix!r}; give a {kinds} file")
    if target.suffix != ".jsonl":
        raise UsageError(f"--out {args.out}: the converted data is JSON Lines; name the file .jsonl")
    if target.exists() and (target.is_dir() or target.samefile(source)):
        what = "a folder" if target.is_dir() else "IN itself"
        raise UsageError(f"--out {args.out} is {what}; give a new file to write")
    done = convert_file(source, display(source), args.to, target)
    for problem in done.problems:
        err.print(f"{problem}" + (f"\n  = hint: {problem.hint}" if problem.hint else ""), markup=False)
    if done.problems:
        err.print(f"\n{display(source)}: {len(done.problems)} problem(s); nothing written", markup=False)
        return EXIT_PROBLEMS
    if done.target is None:
        err.print(f"{display(source)} holds no records; nothing written", markup=False)
        return EXIT_PROBLEMS
    what = f"{display(source)} ({done.source}) into {display(target)} ({done.target})"
    out.print(f"converted {done.records:,} record(s) of {what}", markup=False)
    if done.wrapped:
        out.print(
            f"{done.wrapped:,} of them had a string prompt or answers, or were completion records, and were wrapped "
            "into messages: converting back gives message lists (chat or preference), not the strings",
            markup=False,
        )
    return EXIT_OK


def cmd_data_check(args: argparse.Namespace) -> int:
    from ftc.compiler.data.check import check_data, token_errors

    path = spec_path(args.spec)
    bar, tick = progress()
    with bar:
        checked = check_data(path, Path.cwd(), progress=tick)
    if args.json:
        out.print(json.dumps(checked.as_dict(), indent=2, sort_keys=True), markup=False, soft_wrap=True)
        return EXIT_OK if checked.ok else EXIT_PROBLEMS
    report(checked.diagnostics, {display(path): read_source(path)})
    for problem in checked.problems[:SHOWN_PROBLEMS]:
        err.print(f"{problem}" + (f"\n  = hint: {problem.hint}" if problem.hint else ""), markup=False)
    _more(len(checked.problems), "problem(s) in the records")
    token_lines = token_errors(checked.splits)
    for line in token_lines[:SHOWN_PROBLEMS]:
        err.print(line, markup=False)
    _more(len(token_lines), "problem(s) with tokens")
    if checked.splits:
        _print_summary(checked)
    bad = len(checked.problems) + len(token_errors(checked.splits)) + len(errors(checked.diagnostics))
    verdict = f"{bad} problem(s); `ftc compile` refuses to build until they are fixed" if bad else "no problems"
    (err if bad else out).print(f"\n{display(path)}: data: {verdict}", markup=False)
    return EXIT_OK if checked.ok else EXIT_PROBLEMS


def _more(count: int, what: str) -> None:
    if count > SHOWN_PROBLEMS:
        more = count - SHOWN_PROBLEMS
        err.print(f"... and {more:,} more {what}: `ftc data check --json` lists them all", markup=False)


def _num(value, fmt=",") -> str:
    return "-" if value is None else format(value, fmt)


def _pct(value) -> str:
    return "-" if value is None else f"{value:.1%}"


def _spread(d) -> str:
    return "-" if not d else f"{d['min']:,} / {d['median']:,g} / {d['p95']:,} / {d['max']:,}"


def _summary_rows(splits: list[dict]) -> list[tuple[str, list[str]]]:
    """The table's rows: a label, then one cell per split."""

    def overlong(s) -> str:
        o = s["overlong"]
        return f"{o['error']}/{o['dropped']}/{o['truncated']} ({_pct(s['overlong_share'])})"

    def duplicates(s) -> str:
        d = s["duplicates"]
        return f"{sum(map(len, d['exact']))} / {sum(map(len, d['normalized']))}"

    def waste(s) -> str:
        w = s["padding_waste"]
        return f"{_pct(w['pad_to_max_length'])} / {_pct(w['packing'])}"

    return [
        ("file", [s["file"] for s in splits]),
        ("examples (of records)", [f"{s['examples']:,} (of {s['records']:,})" for s in splits]),
        ("tokens", [_num(s["tokens"]) for s in splits]),
        ("tokens/example min/median/p95/max", [_spread(s["tokens_per_example"]) for s in splits]),
        ("over max_length: error/dropped/truncated", [overlong(s) for s in splits]),
        ("turns/conversation min/median/p95/max", [_spread(s["turns_per_conversation"]) for s in splits]),
        ("duplicates: exact / normalised", [duplicates(s) for s in splits]),
        ("tokens that carry loss", [_pct(s["loss_token_share"]) for s in splits]),
        ("padding waste: to max_length / packed", [waste(s) for s in splits]),
    ]


def _print_summary(checked) -> None:
    from rich.table import Table

    title = f"data of {checked.spec} ({checked.format}, max_length {checked.max_length})"
    table = Table(title=title, title_justify="left")
    splits = [s.as_dict(checked.max_length, checked.packing_strategy) for s in checked.splits]
    table.add_column("")
    for s in checked.splits:
        table.add_column(s.name, justify="right", overflow="fold")
    for label, cells in _summary_rows(splits):
        table.add_row(label, *cells)
    out.print(table)
    if checked.cleaning:
        c = checked.cleaning
        out.print(
            f"cleaning (as the spec asks) removed {c['removed']:,} and changed {c['changed']:,} example(s); "
            "the table describes what is left, which is what trains",
            markup=False,
        )
    for s, d in zip(checked.splits, splits):
        _print_split(s.name, d)


def _print_split(name: str, d: dict) -> None:
    """One split's histogram of tokens per example, its labels and its duplicate groups."""
    peak = max((b["examples"] for b in d["histogram"]), default=0) or 1
    out.print(f"\n{name}: tokens per example", markup=False)
    for b in d["histogram"]:
        bar = "#" * round(40 * b["examples"] / peak)
        out.print(f"  {b['from']:>6}-{b['to']:<6} {bar:<40} {b['examples']}", markup=False)
    if d["labels"]:
        if d["label_field"]:
            what = f"{d['label_field']!r} takes {len(d['labels'])} values"
        else:
            what = f"answers form {len(d['labels'])} labels"
        total = sum(d["labels"].values())
        shown = list(d["labels"].items())[: 2 * SHOWN_GROUPS]
        shares = ", ".join(f"{k[:30]!r} {v} ({v / total:.0%})" for k, v in shown)
        shares += f" and {len(d['labels']) - len(shown)} more" if len(d["labels"]) > len(shown) else ""
        out.print(f"{name}: {what}: {shares}", markup=False)
    for kind in ("exact", "normalized"):
        groups = d["duplicates"][kind]
        if groups:
            shown = "; ".join("lines " + lines_of(g) for g in groups[:SHOWN_GROUPS])
            more = f" and {len(groups) - SHOWN_GROUPS} more groups" if len(groups) > SHOWN_GROUPS else ""
            out.print(f"{name}: {kind} duplicates: {shown}{more}", markup=False)
