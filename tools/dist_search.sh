#!/usr/bin/env bash
# Data-parallel one-shot (DARTS) search: CONFIG on GPUS processes per node (one per GPU; without CUDA, CPU
# processes on gloo), started by torchrun; the rest of the arguments go to tools/search.py. The global DARTS
# batch stays strategy.batch_size, split over the processes; rank 0 writes the work dir.
#   tools/dist_search.sh CONFIG GPUS [--work-dir DIR] [--resume] [--cfg-options ...]
# Several nodes (the work dir on a shared file system): NNODES, NODE_RANK, MASTER_ADDR, PORT as for
# tools/dist_train.sh.
set -euo pipefail
if [ "$#" -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/search.py arguments...]" >&2
    exit 2
fi
HERE=$(cd "$(dirname "$0")" && pwd)
exec "$HERE/dist_launch.sh" "$2" "$HERE/search.py" "$1" "${@:3}"
