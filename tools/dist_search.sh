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
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
PORT=${PORT:-29500}
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "$0")" && pwd)

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" --node_rank="$NODE_RANK" --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" --master_port="$PORT" \
    "$HERE/search.py" "$CONFIG" --launcher pytorch "${@:3}"
