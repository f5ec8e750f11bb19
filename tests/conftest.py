"""Test-session set-up shared by every test module."""
import os

# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured with
# the IR-NAS supernet: 4.6 s vs 30-58 s a step); sleeping waits cost nothing measurable on an idle one.
# Set before any test module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402  (after the OpenMP setting above)

# Tests use tiny tensors: one intra-op thread is several times faster for them than two on this 2-core
# machine, and keeps float results identical from run to run.
torch.set_num_threads(1)

# parallel.workers="auto" (the search default) would start Ray with one worker per core in every test that
# runs tools/search.py; those tests are about other things, so auto means one in-process worker here.
# tests/test_parallel.py checks the auto rule itself with the variable removed.
os.environ.setdefault("DENSENAS_WORKERS", "1")
