#!/usr/bin/env bash
# deblurfast's set-up and commands, for a fresh machine and for CI.
#
#   ./dev.sh demo    set up, then run the main job: deblurfast demo, then deblurfast bench --quick
#   ./dev.sh bench   set up, then run deblurfast bench --quick
#   ./dev.sh test    set up, then run the test suite
#   ./dev.sh setup   set up only: virtual environment, torch, triton, the extension build
#   ./dev.sh gpu     on a GPU machine, in at most 8 minutes: the build and the GPU tests, compute-sanitizer
#                    on the CUDA kernels, the op and the model benchmarks, each stage under a time budget,
#                    results into bench/results/<device>/ (or DIR given) as they come, a summary at the end
#
# Set-up is idempotent and offline where everything is already installed: an
# installed torch is used as is (a GPU machine's CUDA build); otherwise the
# pinned torch and torchvision are installed (x86_64: the CUDA 13.0 build, which
# runs on the CPU too). Where nvcc is found, the extension is the full CUDA build
# (setup.py finds the toolkit). It is rebuilt only when its sources, the build
# files, the build's settings or torch changed.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${DEBLURFAST_VENV:-.venv}
case "$(uname -m)" in
  aarch64 | arm64) pinned_torch="torch==2.9.1 torchvision==0.24.1" ;;
  *) pinned_torch="torch==2.14.1 torchvision==0.29.1" ;;
esac
TORCH_SPEC=${DEBLURFAST_TORCH_SPEC:-$pinned_torch}  # one or more pip requirements
PYTHON=${PYTHON:-python3}

log() { printf '\033[1m[dev.sh]\033[0m %s\n' "$*" >&2; }

setup_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV (seeing the system's packages)"
    "$PYTHON" -m venv --system-site-packages "$VENV"
    # $PYTHON may itself live in a virtual environment (the GPU images' torch does):
    # expose its packages as well, after the new environment's own.
    local child
    child=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$PYTHON" -c 'import site; print("\n".join(site.getsitepackages()))' >"$child/_deblurfast_parent_site.pth"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
}

need() {  # need MODULE PIP_SPEC...: install PIP_SPEC unless MODULE imports (fatal if that fails)
  local module=$1
  shift
  python -c "import $module" 2>/dev/null || { log "installing $*"; python -m pip install -q "$@"; }
}

want() {  # want MODULE PIP_SPEC: like need, but only warn if it cannot be installed (e.g. offline)
  python -c "import $1" 2>/dev/null || { log "installing $2"; python -m pip install -q "$2" ||
    log "warning: could not install $2; what needs it is skipped"; }
}

need_space() {  # need_space GIB WHAT: stop at once, naming the shortfall, when the venv's disk has less than GIB free
  local free mount
  read -r free mount < <(df -Pk "$VENV" | awk 'NR == 2 {print int($4 / 1048576), $6}')
  [ "$free" -ge "$1" ] || { log "$2 needs about $1 GiB free on $mount; $free GiB is free"; exit 1; }
}

setup() {
  setup_venv
  # the pinned x86_64 torch and torchvision take 5.6 GB in the venv: a full disk fails here, by name
  python -c "import torch" 2>/dev/null || need_space 7 "installing $TORCH_SPEC"
  # torch comes first, explicitly, so that no other requirement picks one. A torch already
  # there (a GPU machine's) is kept, and torchvision is not added to it: it could replace it.
  # shellcheck disable=SC2086
  need torch $TORCH_SPEC
  python -c "import torchvision" 2>/dev/null ||
    log "warning: torchvision is missing: the comparisons with it are skipped (CI requires them)"
  python -c 'import setuptools, sys; sys.exit(tuple(map(int, setuptools.__version__.split(".")[:2])) < (70, 1))' ||
    { log "installing setuptools>=70.1"; python -m pip install -q "setuptools>=70.1" wheel; }  # editable builds
  need numpy numpy
  need safetensors safetensors
  need PIL pillow
  need yaml pyyaml              # `deblurfast train --config run.yaml`
  need triton triton
  need pytest pytest
  need xdist pytest-xdist
  need tqdm tqdm                # progress bars of deblur, train, bench
  need onnx onnx                # `deblurfast export` and its tests
  need onnxscript onnxscript    # the ops' ONNX translations (torch.onnx.export, dynamo)
  need onnxruntime 'onnxruntime>=1.31'  # runs DeformConv on CPU: the export tests and the bench peer
  want av av                    # video files in `deblurfast deblur`
  want matplotlib matplotlib    # benchmark plots
  want skimage scikit-image     # sample images; an independent implementation the metrics are tested against
  command -v ninja >/dev/null || { log "installing ninja"; python -m pip install -q ninja; }
  build
}

build() {
  local stamp=.deblurfast-build-stamp hash
  hash=$( (cat setup.py pyproject.toml; find csrc -type f | sort | xargs cat; python -c 'import torch; print(torch.__version__)'
           command -v nvcc || true; env | grep -E '^(CUDA_HOME|TORCH_CUDA_ARCH_LIST|DEBLURFAST_[A-Z_]+)=' | sort || true) |
         sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ] && python -c 'import deblurfast._C' 2>/dev/null; then
    return
  fi
  log "building deblurfast (pip install --no-build-isolation -e .; the CUDA build takes minutes)"
  local started=$SECONDS
  # -v: setup.py's configuration (CUDA_HOME, archs) is printed; the compiler's lines are not kept
  MAX_JOBS=${MAX_JOBS:-$(nproc)} python -m pip install -v --no-build-isolation --no-deps -e . >.deblurfast-build.log 2>&1 ||
    { tail -40 .deblurfast-build.log >&2; log "the build failed (whole log: .deblurfast-build.log)"; return 1; }
  # the last of the configurations setup.py printed (metadata and build each print one), without the sources
  awk '/deblurfast build configuration:/ {block = ""; on = 1} / sources / {on = 0} on {block = block $0 "\n"}
       END {printf "%s", block}' .deblurfast-build.log >&2
  python -c 'import deblurfast._C' || { log "deblurfast._C does not import after the build"; return 1; }
  log "built in $((SECONDS - started)) s"
  echo "$hash" >"$stamp"
}

cuda_visible() { python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; }

# -- ./dev.sh gpu: a lent GPU machine gives 15 minutes in all, its start included, and at most
# 10 minutes a command; the stages' budgets (seconds) sum to 8 minutes, the most valuable first.
GPU_BUILD_TEST_S=${GPU_BUILD_TEST_S:-240}  # set-up and build (about 80 s for one arch), then `pytest -m cuda`
GPU_SANITIZER_S=${GPU_SANITIZER_S:-90}
GPU_BENCH_S=${GPU_BENCH_S:-90}
GPU_MODELS_S=${GPU_MODELS_S:-60}

stage() {  # stage NAME BUDGET_S LOG COMMAND...: COMMAND under its budget, output into LOG, one summary line
  local name=$1 budget=$2 log=$3 started=$SECONDS rc=0 result
  shift 3
  log "$name (budget ${budget} s) -> $log"
  if [ "$budget" -le 0 ]; then
    echo "no time left in the budget" >"$log"
    rc=124
  else
    timeout -k 10 "$budget" "$@" >"$log" 2>&1 || rc=$?
  fi
  case $rc in
    0) result=ok ;;
    124 | 137) result="cut off" ;;
    *) result="failed ($rc)" ;;
  esac
  printf '%-14s %-11s %4d s  %s\n' "$name" "$result" $((SECONDS - started)) \
    "$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-90)" >>"$out/summary.txt"
  [ $rc = 0 ]
}

gpu() {
  local started=$SECONDS status=0 device
  out=${1:-}
  if [ -z "$out" ]; then
    device=$(python3 -c 'import torch; print(torch.cuda.get_device_name(0).lower().replace(" ", "-"))' 2>/dev/null ||
      echo gpu)
    out=bench/results/$device
  fi
  mkdir -p "$out"
  : >"$out/summary.txt"
  # the build counts against the first stage's budget; the tests get what is left of it
  stage setup "$GPU_BUILD_TEST_S" "$out/setup.log" ./dev.sh setup || status=1
  setup_venv
  cuda_visible || { log "no CUDA GPU is visible"; cat "$out/summary.txt"; exit 2; }
  export DEBLURFAST_REQUIRE_BACKENDS=cpu,cuda,triton
  stage gpu-tests $((GPU_BUILD_TEST_S - (SECONDS - started))) "$out/gpu-tests.log" \
    python -m pytest -n 8 -m cuda -q -p no:cacheprovider || status=1
  stage sanitizer "$GPU_SANITIZER_S" "$out/compute-sanitizer.log" \
    compute-sanitizer --tool memcheck --error-exitcode 99 python -m pytest -q -p no:cacheprovider -m cuda \
    -k "cuda-cuda" tests/test_dynamic_filter2d.py tests/test_deform_conv2d.py || status=1
  # torch.compile peers cost minutes of compilation each: opt in with GPU_COMPILE=1. The sweeps write
  # their result files after every case, so a cut-off sweep keeps what it measured.
  local compile=--no-compile
  [ "${GPU_COMPILE:-0}" = 1 ] && compile=--compile
  stage op-sweep "$GPU_BENCH_S" "$out/op-sweep.log" deblurfast bench $compile --reps 10 --out "$out" || status=1
  stage model-sweep "$GPU_MODELS_S" "$out/model-sweep.log" \
    deblurfast bench --models $compile --reps 10 --out "$out" || status=1
  python -m deblurfast.bench.report >/dev/null || status=1
  {
    echo
    echo "deblurfast ./dev.sh gpu on ${device:-$out}: $((SECONDS - started)) s, results in $out"
    cat "$out/summary.txt"
    grep -h "ERROR SUMMARY" "$out/compute-sanitizer.log" 2>/dev/null | tail -1
    for f in "$out"/*.jsonl; do
      [ -e "$f" ] || continue
      python - "$f" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
ran = [r for r in rows if "fwd_ms_median" in r or "latency_ms_median" in r]
bad = [r for r in rows if str(r.get("status", "")).startswith(("TOLERANCE", "error"))]
print(f"{sys.argv[1].rsplit('/', 1)[-1]:<28} {len(rows):4d} rows, {len(ran):4d} timed, {len(bad):3d} failed a check")
PY
    done
    grep -hE "^(FAILED|ERROR) " "$out/gpu-tests.log" 2>/dev/null | head -8
  } | tee -a "$out/summary.txt"
  exit $status
}

cmd=${1:-}
shift || true
case "$cmd" in
  setup) setup ;;
  demo)
    setup
    deblurfast demo --out demo "$@"
    exec deblurfast bench --quick --out bench/out
    ;;
  bench)
    setup
    exec deblurfast bench --quick --out bench/out "$@"
    ;;
  test)
    setup
    # These backends must run here: a broken build fails instead of skipping.
    if cuda_visible; then required=cpu,cuda,triton; else required=cpu,triton; fi
    export DEBLURFAST_REQUIRE_BACKENDS=${DEBLURFAST_REQUIRE_BACKENDS:-$required}
    # worksteal: a worker that runs out of tests takes the other's queued ones, so none idles at the end
    exec python -m pytest -n "${PYTEST_WORKERS:-2}" --dist worksteal "$@"
    ;;
  gpu)
    gpu "$@"
    ;;
  *)
    echo "usage: ./dev.sh {demo|bench|test|setup|gpu} [extra arguments]" >&2
    exit 2
    ;;
esac
