#!/usr/bin/env bash
# GPU training benchmark of ftc's generated script: a ~1.1B Llama with random weights (no download), LoRA and
# full fine-tuning at max_length 2048 with packing, against the seed guide's padded Trainer baseline. Writes one
# JSON: real tokens/s, MFU (the FLOPs formula is in the JSON), peak memory (torch.cuda.max_memory_allocated
# from the start of training) against ftc's estimate (lock["estimates"]["peak_memory_gib"]), and the ratios.
# Targets on an H200: MFU >= 40% for full fine-tuning, >= 2x the baseline's real tokens/s, the memory estimate
# within 15% of the measured peak. Runs in under 8 minutes on one GPU; bench/gpu_bench.py holds the phases.
#
#   bash bench/gpu.sh [--out FILE.json] [--work DIR]      on a GPU machine
#   bash bench/gpu.sh --dry-run [--out FILE.json]         the same path on the CPU, tiny model, ~1-2 minutes
#
# Every phase runs under its own timeout and the whole under a deadline; the JSON is rewritten after each
# phase, so a failure or a timeout leaves the other phases' numbers, and the phase is marked failed in it.
# The exit status is 1 when any phase failed.
#
# What the GPU machine needs. It has python 3.12, torch, transformers, peft and accelerate; the generated
# script also imports trl and datasets, and the compiler needs pydantic and jinja2. Carry wheels for those and
# install them without touching torch or transformers, then ftc itself without dependencies:
#   # on a machine with the network, for CPython 3.12 on x86_64:
#   pip download --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 --no-deps -d wheels \
#       trl==1.16.0 datasets pyarrow dill multiprocess xxhash fsspec pandas \
#       pydantic pydantic-core annotated-types typing-inspection jinja2 markupsafe
#   # on the GPU machine, from the repository root:
#   pip install --no-deps --no-index --find-links wheels wheels/*.whl
#   pip install --no-deps -e .
# (pandas, jinja2 and markupsafe are often there already; drop the ones that are.) Check with:
#   python -c "import trl, datasets, pydantic, ftc.compiler.build"
# PYTHON picks the interpreter (default: .venv/bin/python when there is one, else python3).
set -euo pipefail

cd "$(dirname "$0")/.."
DRY_RUN=0
OUT=""
WORK=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --out) OUT="$2"; shift ;;
    --work) WORK="$2"; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
if [ "$DRY_RUN" = 1 ]; then
  OUT="${OUT:-bench-gpu-dry-run.json}"
  DEADLINE=420                       # seconds for everything (about 1-2 minutes on an idle 2-core CPU)
  LIMITS=(setup=100 ftc-full=90 ftc-lora=90 baseline-lora=90 baseline-full=90)
  SETUP_ARGS=(--dry-run)
else
  OUT="${OUT:-bench-gpu.json}"
  DEADLINE=460                       # under 8 minutes, with room for the report
  LIMITS=(setup=150 ftc-full=100 ftc-lora=90 baseline-lora=90 baseline-full=90)
  SETUP_ARGS=()
fi
OWN_WORK=0
if [ -z "$WORK" ]; then WORK="$(mktemp -d -t ftc-gpu-bench-XXXXXX)"; OWN_WORK=1; fi
cleanup() { if [ "$OWN_WORK" = 1 ]; then rm -rf "$WORK"; fi; }
trap cleanup EXIT
rm -f "$OUT"

START=$SECONDS
STATUS=0
BENCH=("$PYTHON" bench/gpu_bench.py)

phase() {  # phase NAME LIMIT ARGS...: run one phase under min(LIMIT, time left); on failure mark it in the JSON
  local name="$1" limit="$2"; shift 2
  local left=$((DEADLINE - (SECONDS - START)))
  if [ "$left" -lt 20 ]; then
    echo "gpu.sh: $name skipped: the ${DEADLINE}s deadline is near" >&2
    "${BENCH[@]}" fail --work "$WORK" --out "$OUT" "$name" "skipped: deadline" || true
    STATUS=1
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s, $((SECONDS - START))s elapsed)"
  local rc=0
  timeout --kill-after=10 "$limit" "${BENCH[@]}" "$@" --work "$WORK" --out "$OUT" || rc=$?
  if [ "$rc" -ne 0 ]; then
    local why="exit $rc"
    [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && why="timed out after ${limit}s"
    echo "gpu.sh: $name failed ($why)" >&2
    "${BENCH[@]}" fail --work "$WORK" --out "$OUT" "$name" "$why" || true
    STATUS=1
    return 1
  fi
}

limit_of() { local kv; for kv in "${LIMITS[@]}"; do [ "${kv%%=*}" = "$1" ] && echo "${kv#*=}"; done; }

if phase setup "$(limit_of setup)" setup "${SETUP_ARGS[@]}"; then
  for side in ftc-full ftc-lora baseline-lora baseline-full; do
    phase "$side" "$(limit_of "$side")" run "$side" || true
  done
fi
"${BENCH[@]}" report --work "$WORK" --out "$OUT" || STATUS=1
echo "gpu.sh: wrote $OUT in $((SECONDS - START))s"
exit "$STATUS"
