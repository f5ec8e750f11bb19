#!/usr/bin/env bash
# Data-parallel evaluation: CONFIG with CHECKPOINT on GPUS processes per node (torchrun; without CUDA,
# CPU processes on gloo); the rest of the arguments go to tools/test.py. Rank 0 prints and writes the figures.
#   tools/dist_test.sh CONFIG CHECKPOINT GPUS [--json out.json] [--cfg-options ...]
# Several nodes: NNODES, NODE_RANK, MASTER_ADDR, PORT as for tools/dist_train.sh.
set -euo pipefail
if [ "$#" -lt 3 ]; then
    echo "usage: $0 CONFIG CHECKPOINT GPUS [tools/test.py arguments...]" >&2
    exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
exec "$HERE/dist_launch.sh" "$3" "$HERE/test.py" "$1" "$2" "${@:4}"
