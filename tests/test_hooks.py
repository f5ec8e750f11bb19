"""Loop hooks (densenas/hooks.py, issue #25 item 4): a user hook is called around every candidate and at the
end, a failing one is switched off without costing the search, configs name hooks by 'module:Class', and
bad hook specs are refused naming the entry."""
from __future__ import annotations

import sys
import textwrap

import pytest

from densenas.config import ConfigError, load_config
from densenas.history import History
from densenas.hooks import Hook, HookList, LogLines, RunInfo, build_hooks
from densenas.loop import Budget, run
from densenas.strategies import RandomSearch
from toy import ToyEvaluator, ToySpace


class Recorder(Hook):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def before_run(self, run: RunInfo) -> None:
        self.calls.append(("before", run.total, run.done, run.unit))

    def after_candidate(self, progress) -> None:
        self.calls.append(("candidate", progress.done, progress.candidate.id))

    def after_run(self, outcome, error) -> None:
        self.calls.append(("after", None if outcome is None else outcome.done, type(error).__name__))


def test_a_hook_sees_the_run_each_candidate_and_the_end_also_on_resume(tmp_path):
    space, rec = ToySpace(), Recorder()
    with History(tmp_path / "h.sqlite") as h:
        out = run(space, RandomSearch(space, seed=1), ToyEvaluator(), h, Budget(candidates=3), hooks=[rec])
        assert rec.calls == [("before", 3, 0, "candidates"), ("candidate", 1, 1), ("candidate", 2, 2),
                             ("candidate", 3, 3), ("after", 3, "NoneType")]
        assert out.done == 3
        rec.calls.clear()
        run(space, RandomSearch(space, seed=1), ToyEvaluator(), h, Budget(candidates=5), hooks=[rec])
        assert rec.calls[0] == ("before", 5, 3, "candidates") and rec.calls[-1] == ("after", 5, "NoneType")


class Killed(BaseException):
    pass


def test_after_run_is_told_the_error_and_a_failing_hook_is_switched_off(tmp_path):
    class Boom(Hook):
        def after_candidate(self, progress):
            raise RuntimeError("disk full")

    class Dies(ToyEvaluator):
        def evaluate(self, arch, seed=0):
            if seed >= 2:
                raise Killed()
            return super().evaluate(arch, seed)

    space, rec, lines = ToySpace(), Recorder(), []
    with History(tmp_path / "h.sqlite") as h:
        out = run(space, RandomSearch(space, seed=1), ToyEvaluator(), h, Budget(candidates=3),
                  hooks=[Boom(), rec, LogLines(lines.append)])
        assert out.done == 3 and [c[0] for c in rec.calls].count("candidate") == 3  # the search went on
        assert sum("hook Boom switched off: after_candidate raised RuntimeError: disk full" in ln
                   for ln in lines) == 1
    rec.calls.clear()
    with History(tmp_path / "h2.sqlite") as h, pytest.raises(Killed):
        run(space, RandomSearch(space, seed=1), Dies(), h, Budget(candidates=5), hooks=[rec])
    assert rec.calls[-1] == ("after", None, "Killed")


def test_hooks_from_a_config_by_module_and_class(tmp_path, monkeypatch):
    (tmp_path / "my_hooks.py").write_text(textwrap.dedent('''
        from densenas.hooks import Hook

        class Best(Hook):
            def __init__(self, path):
                self.path = path

        class NotAHook:
            pass
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_hooks", None)
    from densenas.build import plan_search

    cfg = load_config("configs/search/auxcell_proxy.py")
    cfg.hooks = [dict(type="my_hooks:Best", path="x.txt")]  # as a config file writes it
    plan = plan_search(cfg)
    (hook,) = plan["hooks"]
    assert type(hook).__name__ == "Best" and hook.path == "x.txt"
    bad = {"a dict": ({"type": "my_hooks:Best"}, "'hooks' must be a list"),
           "no type": ([{"path": 1}], r"hooks\[0\]: need dict\(type="),
           "no module": ([{"type": "nope_mod:X"}], "cannot import module 'nope_mod'"),
           "no class": ([{"type": "my_hooks:Gone"}], "module 'my_hooks' has no 'Gone'"),
           "not a hook": ([{"type": "my_hooks:NotAHook"}], "is not a subclass of densenas.hooks.Hook"),
           "bad kwargs": ([{"type": "my_hooks:Best", "colour": 1}], r"hooks\[0\]: my_hooks:Best: .*colour"),
           "a name": ([{"type": "slack"}], "no hook plugins are installed .*'module:Class'")}
    for what, (spec, msg) in bad.items():
        with pytest.raises(ConfigError, match=msg):
            build_hooks(spec, "cfg.py")
    with pytest.raises(TypeError, match="is not a densenas.hooks.Hook"):
        HookList([object()])
