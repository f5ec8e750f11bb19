"""Test-session set-up shared by every test module."""
import os

# OpenMP threads that spin while waiting make torch on a busy 2-core machine 5-10x slower (measured with
# the IR-NAS supernet: 4.6 s vs 30-58 s a step); sleeping waits cost nothing measurable on an idle one.
# Set before any test module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
