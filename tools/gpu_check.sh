#!/usr/bin/env bash
# The GPU check: on a host with an NVIDIA GPU, from the repository root of a checkout,
#
#   tools/gpu_check.sh
#
# 1. prints nvidia-smi (the GPU, the driver and the newest CUDA it runs);
# 2. installs the package with the `gpu` extra (onnxruntime-gpu with the CUDA and cuDNN
#    libraries as PyPI wheels) and `dev`, after removing the CPU wheel `onnxruntime` (the two
#    wheels share one package folder; pip does not remove the other one), and checks that a
#    session really runs on CUDAExecutionProvider;
# 3. runs the gpu tests (`python -m pytest -q -m gpu`): sessions on CUDA with TF32 off, fp32
#    on CUDA against the CPU within 1e-4 on bert-base dimensions, fp16 on CUDA, packed == solo;
# 4. prepares random:base in fp32 (`--kernels mha`: a folder for CUDA, without this package's
#    CPU kernels) and fp16 and runs `packed-bert bench` of the seed mix on both with
#    --device cuda, then prints each mode's speed-up over Original and fp16 / fp32.
#
# Sized to finish within 8 minutes on one H100 with a fast network (sized, not timed: it has
# not been run on a GPU; a fresh environment's install downloads roughly 2 GB of wheels);
# each step prints its time. Run it in a virtual
# environment made for it: it changes which ONNX Runtime wheel is installed.
#
# Settings (environment variables):
#   PYTHON        the interpreter (default python3)
#   SAMPLES       requests in the bench's seed mix (default 512)
#   GPU_CHECK_DIR where the model folders and the bench report go (default a new temp folder)
#   ORT_GPU_SPEC  the ONNX Runtime GPU requirement to install instead of the `gpu` extra's, e.g.
#                 "onnxruntime-gpu[cuda,cudnn]==X.Y.Z" for a release built for the CUDA major
#                 version your driver runs (nvidia-smi's "CUDA Version")
#   SKIP_INSTALL  1: use the environment as it is (no pip)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
SAMPLES=${SAMPLES:-512}
OUT=${GPU_CHECK_DIR:-$(mktemp -d -t gpu-check.XXXXXX)}
mkdir -p "$OUT"
export PIP_DISABLE_PIP_VERSION_CHECK=1

step_start=$SECONDS
step() {
    printf '\n== [%4ds] %s\n' "$((SECONDS - step_start))" "$*"
}

step "GPU"
if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu_check: nvidia-smi not found: this check needs an NVIDIA GPU and its driver" >&2
    exit 1
fi
nvidia-smi

pip_has() { "$PYTHON" -m pip show "$1" >/dev/null 2>&1; }

if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
    step "install (.[gpu,dev])"
    if pip_has onnxruntime; then
        echo "removing the CPU wheel onnxruntime (it shares its package folder with onnxruntime-gpu)"
        "$PYTHON" -m pip uninstall -y onnxruntime
        if pip_has onnxruntime-gpu; then  # its files were overwritten, then partly removed
            "$PYTHON" -m pip uninstall -y onnxruntime-gpu
        fi
    fi
    if [[ -n "${ORT_GPU_SPEC:-}" ]]; then
        "$PYTHON" -m pip install -e ".[dev]" "$ORT_GPU_SPEC"
    else
        "$PYTHON" -m pip install -e ".[gpu,dev]"
    fi
    if pip_has onnxruntime; then
        echo "gpu_check: the CPU wheel onnxruntime came back with the install (a dependency" \
             "asks for it): uninstall both wheels and reinstall onnxruntime-gpu" >&2
        exit 1
    fi
fi

step "ONNX Runtime on CUDA"
"$PYTHON" - <<'EOF'
import re
import shutil
import subprocess
import sys

import onnxruntime as ort

from packing.runtime.backend import cuda_problem, installed_onnxruntime_wheels

print(f"onnxruntime {ort.__version__}; installed wheels: {installed_onnxruntime_wheels()}")
print(f"available providers: {ort.get_available_providers()}")
try:
    from onnxruntime.capi import build_and_package_info as info
except ImportError:
    info = None
built = getattr(info, "cuda_version", None)
smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True) if shutil.which(
    "nvidia-smi") else None
driver = re.search(r"CUDA Version:\s*(\d+)\.", smi.stdout) if smi else None
if built:
    print(f"onnxruntime built for CUDA {built}; the driver runs CUDA up to "
          f"{driver.group(1) if driver else '?'}.x")
problem = cuda_problem()
if problem:
    if built and driver and int(driver.group(1)) < int(built.split(".")[0]):
        problem += (f" This onnxruntime-gpu needs CUDA {built.split('.')[0]}, newer than the "
                    f"driver's CUDA {driver.group(1)}: update the driver, or set ORT_GPU_SPEC "
                    "to an onnxruntime-gpu release built for your CUDA major version.")
    sys.exit(f"gpu_check: {problem}")
print("a session with CUDAExecutionProvider runs on it")
EOF

step "gpu tests (python -m pytest -q -m gpu)"
tests_rc=0
"$PYTHON" -m pytest -q -m gpu -p no:cacheprovider || tests_rc=$?

step "prepare random:base in fp32 and fp16 ($OUT)"
rm -rf "$OUT/base-fp32" "$OUT/base-fp16"
"$PYTHON" -m packing.cli prepare --model random:base --out "$OUT/base-fp32" --precision fp32 --kernels mha
"$PYTHON" -m packing.cli prepare --model random:base --out "$OUT/base-fp16" --precision fp16

step "bench: seed mix, $SAMPLES samples, fp32 then fp16, on CUDA"
"$PYTHON" -m packing.cli bench --model-dir "$OUT/base-fp32" "$OUT/base-fp16" --workload seed \
    --samples "$SAMPLES" --device cuda --no-progress --json "$OUT/bench.json"

step "ratios"
"$PYTHON" - "$OUT/bench.json" <<'EOF'
import json
import sys

report = json.load(open(sys.argv[1]))
first, second = report["runs"][0], report["runs"][1]
p1, p2 = first["precision"], second["precision"]
print(f"backend: {first['machine']['backend']} | {second['machine']['backend']}")


def ran(r):
    return bool(r) and not r.get("skipped") and bool(r.get("throughput"))


def num(r, key, fmt, suffix=""):
    return format(r[key], fmt) + suffix if ran(r) and r.get(key) is not None else "-"


print(f"{'mode':42s} {p1 + ' /s':>9s} {'vs Orig':>8s} {p2 + ' /s':>9s} {'vs Orig':>8s} "
      f"{p2 + '/' + p1:>10s}")
other = {m["key"]: m for m in second["modes"]}
for m in first["modes"]:
    h = other.get(m["key"], {})
    ratio = f"{h['throughput'] / m['throughput']:.2f}x" if ran(m) and ran(h) else "-"
    print(f"{m['label']:42s} {num(m, 'throughput', '.1f'):>9s} {num(m, 'speedup', '.2f', 'x'):>8s} "
          f"{num(h, 'throughput', '.1f'):>9s} {num(h, 'speedup', '.2f', 'x'):>8s} {ratio:>10s}")
for run in (first, second):
    s = run.get("summary")
    if s:
        print(f"{run['precision']}: best packed online / best rival = {s['ratio']:.2f}x "
              f"({s['packed']} vs {s['rival']})")
for run in report["precisions"]["runs"][1:]:
    if "best_packed_vs_first" in run:
        print(f"best packed {run['precision']} / best packed {p1} = {run['best_packed_vs_first']:.2f}x")
EOF

step "done: report $OUT/bench.json"
if [[ $tests_rc -ne 0 ]]; then
    echo "gpu_check: the gpu tests failed (exit $tests_rc); see above" >&2
fi
exit "$tests_rc"
