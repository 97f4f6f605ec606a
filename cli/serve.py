"""Serving a run: `ftc merge` writes RUN_DIR/merged/ and verifies it, `ftc serve` starts vLLM after a parity check."""

from __future__ import annotations

import argparse
from pathlib import Path

from ftc.cli.common import UsageError, display, err, out, quiet_model_loading, run_folder, step_reporter
from ftc.compiler.exitcodes import EXIT_OK, EXIT_PROBLEMS
from ftc.compiler.spec.export import FORMATS as EXPORT_FORMATS

DTYPES = ("auto", "float32", "bfloat16", "float16")


def add_merge(verbs) -> None:
    p = verbs.add_parser(
        "merge",
        help="merge a run's adapter into its base, write RUN_DIR/merged/ for vLLM, and verify it",
        description=(
            "Write RUN_DIR/merged/, a plain Hugging Face folder (safetensors, tokenizer, the locked chat template, "
            "stop tokens in generation_config.json) that vLLM serves as it is. LoRA merges into the base in the "
            "model dtype; QLoRA into the dequantized 4-bit base it trained against; full fine-tuning is copied. "
            "The merged model's logits are compared with the unmerged model's on held-out examples and the result "
            "is recorded in run.json; a merge outside the tolerance is kept as merged.rejected/ and exits 1."
        ),
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the run folder, e.g. runs/quickstart/20250101-120000")
    p.add_argument(
        "--examples",
        type=int,
        default=4,
        metavar="N",
        help="held-out examples to verify the merge on (default: 4)",
    )
    p.set_defaults(func=cmd_merge)


def cmd_merge(args: argparse.Namespace) -> int:
    from ftc.compiler.build.lock import LOCK_NAME
    from ftc.runtime.runfolder import RUN_RECORD, RunFolderError

    run_dir = run_folder(args.run_dir, (RUN_RECORD, LOCK_NAME))
    if args.examples < 1:
        raise UsageError("--examples must be at least 1")
    from ftc.runtime.merge import MergeFailed, merge_run

    quiet_model_loading()
    try:
        with err.status("merging", spinner="dots") as status:
            result = merge_run(run_dir, examples=args.examples, step=step_reporter(status))
    except (RunFolderError, MergeFailed) as exc:
        err.print(f"ftc merge: {exc}", markup=False)
        return EXIT_PROBLEMS
    shown = display(result.path)
    if result.verification is None:
        out.print(
            f"wrote {shown}/: a copy of final/ (full fine-tuning saved every weight; nothing to merge or verify)",
            markup=False,
        )
    else:
        out.print(f"wrote {shown}/, verified on held-out examples: {result.verification.summary()}", markup=False)
    out.print(f"recorded under \"merge\" in {display(run_dir / RUN_RECORD)}", markup=False)
    return EXIT_OK


def add_serve(verbs) -> None:
    p = verbs.add_parser(
        "serve",
        help="serve a run's merged model (or its adapter) with vLLM's OpenAI-compatible server, after a parity check",
        description=(
            "Start vLLM's OpenAI-compatible server on RUN/merged/ (RUN: a run folder, or a spec for its newest "
            "completed run, or a project NAME for the run `ftc promote` made current), on the run's base with its "
            "LoRA adapter (--adapter), or on any MODEL_DIR with "
            "safetensors weights and a tokenizer. A prompt-tuning or P-tuning run is served as its base, with the "
            "learned virtual tokens put before each prompt as vLLM prompt embeddings by ftc's own OpenAI-compatible "
            "front (chat and completions, no streaming); prefix tuning cannot be served. Host, port, served model "
            "name, API key variable, max_model_len and dtype come from the lock's serve section; the chat template "
            "and stop tokens are those the model "
            "trained with. Before declaring it ready, greedy answers from vLLM and from transformers to N held-out "
            "prompts must agree token for token (recorded in run.json under \"serve\"). Ctrl-C stops the server. "
            "Exit statuses: 0 stopped cleanly, 1 the parity gate or vLLM failed, 2 refused or usage error, "
            "130 interrupted before it was ready."
        ),
    )
    p.add_argument(
        "target",
        metavar="RUN|MODEL_DIR|NAME",
        nargs="?",
        help="a run folder (runs/<name>/<run-id>), a spec (its newest completed run), a model folder, or a project "
        "name (its run promoted with `ftc promote`, runs/NAME/promoted.json); left out with --ab",
    )
    p.add_argument(
        "--adapter",
        action="store_true",
        help="serve the run's base with final/'s LoRA adapter through vLLM's LoRA support instead of merged/ "
        "(LoRA adapters only)",
    )
    p.add_argument(
        "--export",
        metavar="FORMAT",
        choices=EXPORT_FORMATS,
        help="serve the run's exports/FORMAT/ that `ftc export` wrote and gated (w8a8, w4a16: compressed-tensors, in "
        "bfloat16) instead of merged/",
    )
    p.add_argument("--host", help="address to bind (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: serve.port, 8000)")
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        help="vLLM's dtype (default: serve.dtype for this device: float32 on the CPU)",
    )
    p.add_argument(
        "--max-model-len",
        type=int,
        metavar="N",
        help="longest context served (default: serve.max_model_len)",
    )
    p.add_argument(
        "--served-model-name",
        metavar="NAME",
        help="the model name clients ask for (default: serve.served_model_name, the project name)",
    )
    p.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key clients must send (default: serve.api_key_env)",
    )
    p.add_argument(
        "--chat-template",
        metavar="FILE",
        help="give vLLM this chat template instead of the locked one "
        "(the parity gate still compares with the trained template)",
    )
    p.add_argument(
        "--parity",
        type=int,
        default=8,
        metavar="N",
        help="prompts to compare vLLM with transformers on (default: 8; 0 skips the check, with a warning)",
    )
    p.add_argument(
        "--parity-tokens",
        type=int,
        metavar="N",
        help="new tokens per parity answer (default: evaluation.max_new_tokens, else 128)",
    )
    p.add_argument(
        "--min-agreement",
        type=float,
        default=1.0,
        metavar="F",
        help="share of parity prompts that must agree (default: 1, all)",
    )
    p.add_argument(
        "--prompts",
        metavar="FILE",
        help="parity prompts (JSONL/JSON/CSV/Parquet of messages or prompt records) instead of the run's held-out set",
    )
    p.add_argument(
        "--kv-cache-gib",
        type=float,
        metavar="GIB",
        help="CPU only: KV cache size (VLLM_CPU_KVCACHE_SPACE; default: the variable, else 1)",
    )
    p.add_argument(
        "--ready-timeout",
        type=float,
        default=900,
        metavar="SECONDS",
        help="how long vLLM may take to start (default: 900)",
    )
    p.add_argument(
        "--vllm-log",
        metavar="PATH",
        help="where vLLM's output goes (default: RUN/serve.log, or MODEL_DIR/serve.log)",
    )
    p.add_argument(
        "--log",
        metavar="DIR",
        help="log every request and answer, redacted, to DIR/exchanges-NNNNNN.jsonl through ftc's gateway "
        "(default: serve.log of the spec; nothing is logged without one of them)",
    )
    p.add_argument(
        "--ab",
        metavar="A=W,B=W",
        help="A/B serving: each arm (a run folder, spec, model folder or project name) on its own vLLM behind one "
        "gateway, each request routed by the weights (positive, summing to 1; sticky per OpenAI `user`), e.g. "
        "--ab runs/bot/1=0.9,runs/bot/2=0.1; clients ask for the first arm's model name",
    )
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    if args.parity < 0:
        raise UsageError("--parity must be 0 or more")
    if not 0 <= args.min_agreement <= 1:
        raise UsageError("--min-agreement must be between 0 and 1")
    for flag, value in (("--chat-template", args.chat_template), ("--prompts", args.prompts)):
        if value is not None and not Path(value).is_file():
            raise UsageError(f"{flag}: not found: {value}")
    from ftc.runtime.serve.ab import ArmsRefused, parse_ab
    from ftc.runtime.serve.command import ServeOptions, serve

    arms = ()
    if args.ab is not None:
        if args.target is not None:
            raise UsageError(f"give either TARGET ({args.target}) or --ab, not both: --ab names every arm")
        try:
            arms = tuple(parse_ab(args.ab))
        except ArmsRefused as exc:
            raise UsageError(str(exc)) from None
    elif args.target is None:
        raise UsageError("give what to serve: a run folder, a spec, a model folder or a project name (or --ab A=W,B=W)")

    quiet_model_loading()
    options = ServeOptions(
        target=Path(args.target if args.target is not None else arms[0].label),
        adapter=args.adapter,
        export=args.export,
        host=args.host,
        port=args.port,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        served_model_name=args.served_model_name,
        api_key_env=args.api_key_env,
        chat_template=Path(args.chat_template) if args.chat_template else None,
        parity=args.parity,
        parity_tokens=args.parity_tokens,
        min_agreement=args.min_agreement,
        prompts=Path(args.prompts) if args.prompts else None,
        kv_cache_gib=args.kv_cache_gib,
        ready_timeout=args.ready_timeout,
        log=Path(args.vllm_log) if args.vllm_log else None,
        exchanges=Path(args.log) if args.log else None,
        ab=arms,
    )
    return serve(options, out, err)
