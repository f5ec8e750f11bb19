#!/usr/bin/env bash
# Data-parallel fine-tuning: CONFIG on GPUS processes per node (one per GPU; without CUDA, CPU processes on
# the gloo backend), started by torchrun; the rest of the arguments go to tools/train.py.
#   tools/dist_train.sh CONFIG GPUS [--work-dir DIR] [--cfg-options ...]
# Several nodes: run it on each with NNODES, NODE_RANK (0 on the master), MASTER_ADDR (the master's
# address) and PORT set alike; defaults: 1 node, rank 0, 127.0.0.1, 29500.
set -euo pipefail
if [ "$#" -lt 2 ]; then
    echo "usage: $0 CONFIG GPUS [tools/train.py arguments...]" >&2
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
    "$HERE/train.py" "$CONFIG" --launcher pytorch "${@:3}"
