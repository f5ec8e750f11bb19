#!/usr/bin/env bash
# The torchrun start shared by tools/dist_train.sh, dist_test.sh and dist_search.sh:
#   tools/dist_launch.sh NPROC TOOL [TOOL ARGUMENTS...]   (TOOL gets --launcher pytorch appended)
# NNODES (1), NODE_RANK (0 on the master), MASTER_ADDR (127.0.0.1) and PORT (29500) as in OpenMMLab;
# PYTHON (python). Several nodes: run the same command on each with these set alike.
set -euo pipefail
NPROC=$1
TOOL=$2
exec "${PYTHON:-python}" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" --node_rank="${NODE_RANK:-0}" --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROC" --master_port="${PORT:-29500}" \
    "$TOOL" "${@:3}" --launcher pytorch
