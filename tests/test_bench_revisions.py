"""benchmarks/bench_revisions.py: each worker imports densenas, and its plugin folders, from its revision's tree.

A first version timed this checkout against itself: ``python -c`` puts the cwd (this checkout) first on
sys.path, and setup.py's ``densenas.tasks`` mapping is served by the editable install's finder."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from _tools import load_script

ROOT = Path(__file__).resolve().parents[1]


def test_a_worker_imports_its_revision_not_this_checkout(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    bench = load_script("benchmarks/bench_revisions.py", "bench_revisions")
    tree = tmp_path / "rev"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), "HEAD"], cwd=ROOT, check=True,
                   capture_output=True)
    try:
        code = bench.PRELUDE + "print(json.dumps(MODULES))"
        out = subprocess.run(bench.revision_argv(code), cwd=ROOT, env=bench.revision_env(tree),
                             check=True, capture_output=True, text=True).stdout
        modules = json.loads(out.splitlines()[-1])
        assert [Path(m).relative_to(tree).as_posix() for m in modules] == ["densenas/__init__.py",
                                                                           "tasks/__init__.py"]
        bench.check_modules("rev", tree, modules)
        with pytest.raises(SystemExit, match="not the one in"):
            bench.check_modules("here", tree, [str(ROOT / "densenas" / "__init__.py")])
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, capture_output=True)
