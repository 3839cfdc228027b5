#!/usr/bin/env bash
# deblurfast's set-up and commands, for a fresh machine and for CI.
#
#   ./dev.sh demo    set up, then run the main job: deblurfast demo, then deblurfast bench --quick
#   ./dev.sh bench   set up, then run deblurfast bench --quick
#   ./dev.sh test    set up, then run the test suite (CUDA compile checks included)
#   ./dev.sh setup   set up only: virtual environment, torch, triton, the extension build
#   ./dev.sh gpu     on a GPU machine: the GPU test suite, compute-sanitizer on the CUDA kernels,
#                    the full op and model benchmarks into bench/results/<device>/ (or DIR given)
#
# Set-up is idempotent and offline where everything is already installed: an
# installed torch is used as is (a GPU machine's CUDA build); otherwise the
# pinned CPU build is installed. The extension is rebuilt only when its sources,
# the build files or torch changed.
set -euo pipefail
cd "$(dirname "$0")"

VENV=${DEBLURFAST_VENV:-.venv}
TORCH_SPEC=${DEBLURFAST_TORCH_SPEC:-torch==2.13.0}
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

need() {  # need MODULE PIP_SPEC: install PIP_SPEC unless MODULE imports (fatal if that fails)
  python -c "import $1" 2>/dev/null || { log "installing $2"; python -m pip install -q "$2"; }
}

want() {  # want MODULE PIP_SPEC: like need, but only warn if it cannot be installed (e.g. offline)
  python -c "import $1" 2>/dev/null || { log "installing $2"; python -m pip install -q "$2" ||
    log "warning: could not install $2; what needs it is skipped"; }
}

setup() {
  setup_venv
  # Never let a requirement pull a CUDA torch: torch comes first, explicitly.
  need torch "$TORCH_SPEC"
  need numpy numpy
  need safetensors safetensors
  need PIL pillow
  need yaml pyyaml              # `deblurfast train --config run.yaml`
  need triton triton
  need pytest pytest
  need xdist pytest-xdist
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
  hash=$( (cat setup.py pyproject.toml; find csrc -type f | sort | xargs cat; python -c 'import torch; print(torch.__version__)') | sha256sum | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ] && python -c 'import deblurfast._C' 2>/dev/null; then
    return
  fi
  log "building deblurfast (pip install --no-build-isolation -e .)"
  MAX_JOBS=${MAX_JOBS:-$(nproc)} python -m pip install -q --no-build-isolation --no-deps -e .
  echo "$hash" >"$stamp"
}

cuda_visible() { python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)'; }

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
    exec python -m pytest -n "${PYTEST_WORKERS:-2}" "$@"
    ;;
  gpu)
    setup
    cuda_visible || { log "no CUDA GPU is visible"; exit 2; }
    device=$(python -c 'import torch; print(torch.cuda.get_device_name(0).lower().replace(" ", "-"))')
    out=${1:-bench/results/$device}
    mkdir -p "$out"
    export DEBLURFAST_REQUIRE_BACKENDS=cpu,cuda,triton
    status=0
    # each stage is bounded, so that a lent machine's time yields results from every stage
    log "GPU test suite -> $out/gpu-tests.log"
    timeout "${GPU_TEST_S:-600}" python -m pytest -n 8 -m cuda -q -p no:cacheprovider >"$out/gpu-tests.log" 2>&1 || status=1
    tail -3 "$out/gpu-tests.log"
    log "compute-sanitizer memcheck on the CUDA kernels -> $out/compute-sanitizer.log"
    timeout "${GPU_SANITIZER_S:-300}" compute-sanitizer --tool memcheck --error-exitcode 99 python -m pytest -q \
      -p no:cacheprovider -m cuda -k "cuda-cuda" tests/test_dynamic_filter2d.py tests/test_deform_conv2d.py \
      >"$out/compute-sanitizer.log" 2>&1 || status=1
    tail -3 "$out/compute-sanitizer.log"
    # torch.compile peers cost minutes of compilation each: opt in with GPU_COMPILE=1
    compile=--no-compile
    [ "${GPU_COMPILE:-0}" = 1 ] && compile=--compile
    log "op benchmarks -> $out"
    timeout "${GPU_BENCH_S:-900}" deblurfast bench $compile --out "$out" || status=1
    log "model benchmarks -> $out"
    timeout "${GPU_MODELS_S:-900}" deblurfast bench --models $compile --out "$out" || status=1
    python -m deblurfast.bench.report
    exit $status
    ;;
  *)
    echo "usage: ./dev.sh {demo|bench|test|setup|gpu} [extra arguments]" >&2
    exit 2
    ;;
esac
