"""Safe loading (densenas/safeload.py): a checkpoint whose pickle would run code is refused everywhere a file
is loaded — tools/test.py's CHECKPOINT, tools/train.py's ``load_from`` and ``--resume``, mmengine's
``Pretrained`` init, a supernet checkpoint and a history row resumed by tools/search.py — with an error naming
the file and the offending global, and the marker file the pickle would create never appears. Real
checkpoints written by tools/train.py still load, evaluate and resume, and tools/test.py refuses weights that
do not match the model instead of evaluating random ones."""
from __future__ import annotations

import io
import os
import pickle
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from densenas.history import History
from densenas.safeload import (CheckpointLoadError, CheckpointMismatchError, CorruptCheckpointError,
                               UnsafeCheckpointError, check_state_dict_keys, install, safe_torch_load)
from test_differentiable_tool import ADL, adl_opts
from test_tools import _tool


class RunsShell:
    """Unpickling it runs ``touch MARKER`` (pickle calls ``os.system``, global ``posix.system``)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class RunsExec:
    """Unpickling it runs Python code creating MARKER (global ``builtins.exec``)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _exp(tmp: Path, what: str = "") -> str:
    """A unique mmengine experiment name: Runners built within one second would share the default one
    (config name + timestamp), and with it the logger and visualizer of an earlier run."""
    return f"experiment_name={tmp.name}{what}"


def _evil_checkpoint(path: Path, payload) -> Path:
    torch.save({"meta": payload, "state_dict": {}}, path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """One tiny Auto-DeepLab supernet search (1 epoch), its derived arch exported and fine-tuned 2 iterations."""
    tmp = tmp_path_factory.mktemp("safe")
    work = tmp / "adl"
    assert _tool("search")([str(ADL), "--work-dir", str(work), "--cfg-options", *adl_opts(tmp, 1)]) == 0
    cfg = tmp / "found.py"
    assert _tool("export")([str(work / "derived_arch.json"), "--out", str(cfg), "--data-root", str(tmp / "proxy"),
                            "--crop", "32", "--iters", "2", "--batch-size", "2", "--workers", "0",
                            "--work-dir", str(tmp / "ft")]) == 0
    assert _tool("train")([str(cfg)]) == 0
    return {"tmp": tmp, "search": work, "cfg": cfg, "ckpt": tmp / "ft" / "iter_2.pth"}


# ------------------------------------------------------------------------------------ the loader itself
def test_payloads_are_live(tmp_path):
    """The payloads do run code under a full unpickle (so the refusals below are not vacuous)."""
    for i, cls in enumerate((RunsShell, RunsExec)):
        marker = tmp_path / f"M{i}"
        pickle.loads(pickle.dumps(cls(marker)))
        assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4:UserWarning")  # torch, on the raw pickle
@pytest.mark.parametrize("cls, glob", [(RunsShell, "posix.system"), (RunsExec, "builtins.exec")])
@pytest.mark.parametrize("fmt", ["torch.save", "pickle-2", "pickle-4"])
def test_malicious_file_is_refused_even_with_env_override(tmp_path, monkeypatch, cls, glob, fmt):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # must not turn the safe load off
    marker, path = tmp_path / "MARKER", tmp_path / "evil.pth"
    if fmt == "torch.save":
        _evil_checkpoint(path, cls(marker))
    else:  # a plain pickle file; protocol 4 uses opcodes torch's reader refuses before it sees a global
        path.write_bytes(pickle.dumps({"state_dict": cls(marker)}, protocol=int(fmt[-1])))
    with pytest.raises(UnsafeCheckpointError) as e:
        safe_torch_load(path)
    assert not marker.exists()
    assert e.value.globals == [glob] and str(path) in str(e.value) and glob in str(e.value)
    assert "If you trust the file" in str(e.value)


def test_getattr_is_allowed_only_for_history_buffer_methods(tmp_path):
    """mmengine checkpoints need getattr(HistoryBuffer, 'min'); any other getattr (the first step of every
    escape from a restricted unpickler) is refused."""
    from mmengine.logging.history_buffer import HistoryBuffer

    class Escape:
        def __reduce__(self):
            return getattr, (HistoryBuffer, "__init__")

    torch.save({"x": Escape()}, tmp_path / "e.pth")
    with pytest.raises(UnsafeCheckpointError, match=r"builtins\.getattr.*not getattr\(HistoryBuffer, '__init__'\)"):
        safe_torch_load(tmp_path / "e.pth")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncated"])
def test_corrupt_file_is_named(tmp_path, trained, content):
    path = tmp_path / "bad.pth"
    path.write_bytes(trained["ckpt"].read_bytes()[:4000] if content == "truncated" else content)
    with pytest.raises(CorruptCheckpointError, match="not a readable PyTorch checkpoint") as e:
        safe_torch_load(path)
    assert str(path) in str(e.value)


def test_mmengine_loaders_are_weights_only(tmp_path, trained):
    """After install(): mmengine's checkpoint loader (load_from, resume) and Pretrained init refuse the
    payload; its real checkpoints load with the message hub's log buffers."""
    from mmengine.model.weight_init import PretrainedInit
    from mmengine.runner.checkpoint import _load_checkpoint

    install()
    install()  # idempotent
    marker = tmp_path / "MARKER"
    evil = _evil_checkpoint(tmp_path / "evil.pth", RunsShell(marker))
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        _load_checkpoint(str(evil), map_location="cpu")
    with pytest.raises(UnsafeCheckpointError, match="posix.system"):
        PretrainedInit(checkpoint=str(evil))(torch.nn.Linear(2, 2))
    assert not marker.exists()
    ck = _load_checkpoint(str(trained["ckpt"]), map_location="cpu")
    assert ck["meta"]["iter"] == 2 and ck["state_dict"]
    buf = next(iter(ck["message_hub"]["log_scalars"].values()))
    assert type(buf).__name__ == "HistoryBuffer" and buf.current() is not None


def test_http_checkpoints_are_weights_only(tmp_path, monkeypatch, trained):
    """mmengine downloads http(s) checkpoints (and torchvision://, open-mmlab://) through torch.hub with
    weights_only=False; after install() the downloaded file is loaded weights-only (download faked)."""
    from mmengine.runner.checkpoint import _load_checkpoint

    install()
    marker = tmp_path / "MARKER"
    served = {"evil.pth": _evil_checkpoint(tmp_path / "served.pth", RunsShell(marker)), "ok.pth": trained["ckpt"]}
    monkeypatch.setattr(torch.hub, "download_url_to_file",
                        lambda url, dst, *a, **k: shutil.copy(served[url.rsplit("/", 1)[-1]], dst))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(UnsafeCheckpointError, match=r"hub/checkpoints/evil\.pth \(from https://x\.org/evil\.pth\)"):
        _load_checkpoint("https://x.org/evil.pth", map_location="cpu")
    assert not marker.exists()
    assert _load_checkpoint("https://x.org/ok.pth", map_location="cpu")["meta"]["iter"] == 2


def test_errors_survive_pickling():
    e = pickle.loads(pickle.dumps(UnsafeCheckpointError("f.pth: refused", "f.pth", ["posix.system"])))
    assert (str(e), e.source, e.globals) == ("f.pth: refused", "f.pth", ["posix.system"])
    assert str(pickle.loads(pickle.dumps(CheckpointMismatchError("m", "f")))) == "m"


def test_mmengine_load_refuses_pickle_and_unsafe_yaml(tmp_path):
    import mmengine
    import yaml

    install()
    marker = tmp_path / "MARKER"
    (tmp_path / "ann.pkl").write_bytes(pickle.dumps([RunsShell(marker)]))
    with pytest.raises(CheckpointLoadError, match=r"ann\.pkl: refused to load a pickle file"):
        mmengine.load(str(tmp_path / "ann.pkl"))
    (tmp_path / "cfg.yaml").write_text(f"x: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(yaml.YAMLError):
        mmengine.load(str(tmp_path / "cfg.yaml"))
    assert not marker.exists()
    mmengine.dump({"a": (1, 2)}, str(tmp_path / "ok.yaml"))  # mmengine writes tuples as python/tuple
    assert mmengine.load(str(tmp_path / "ok.yaml")) == {"a": (1, 2)}
    mmengine.dump({"a": 1}, str(tmp_path / "out.pkl"))  # dumping pickles is still allowed


def test_check_state_dict_keys_lists_keys():
    model = torch.nn.Sequential(*[torch.nn.Linear(2, 2) for _ in range(30)])
    sd = model.state_dict()
    check_state_dict_keys(model, {"state_dict": {f"module.{k}": v for k, v in sd.items()}}, "ok.pth")  # DDP
    check_state_dict_keys(model, dict(sd), "bare.pth")
    with pytest.raises(CheckpointMismatchError) as e:
        check_state_dict_keys(model, {"state_dict": {"extra.w": torch.zeros(1)}}, "bad.pth")
    msg = str(e.value)
    assert msg.startswith("bad.pth:") and "60 weight(s) missing" in msg and "0.weight" in msg
    assert "(40 more)" in msg and "1 weight(s) unexpected" in msg and "extra.w" in msg
    wrong = dict(sd, **{"3.weight": torch.zeros(3, 2)})
    with pytest.raises(CheckpointMismatchError, match=r"3\.weight \(checkpoint \(3, 2\), model \(2, 2\)\)"):
        check_state_dict_keys(model, wrong, "shape.pth")


# --------------------------------------------------------------------------------------------- the tools
def test_test_tool_refuses_malicious_checkpoint(tmp_path, trained, capsys):
    marker = tmp_path / "MARKER"
    evil = _evil_checkpoint(tmp_path / "evil.pth", RunsShell(marker))
    assert _tool("test")([str(trained["cfg"]), str(evil), "--work-dir", str(tmp_path / "t")]) == 2
    out = capsys.readouterr()
    assert not marker.exists()
    assert f"error: {evil}: refused to load" in out.err and "posix.system" in out.err
    assert "Traceback" not in out.err and "metrics:" not in out.out


@pytest.mark.parametrize("how", ["load_from", "resume"])
def test_train_tool_refuses_malicious_checkpoint(tmp_path, trained, capsys, how):
    marker, work = tmp_path / "MARKER", tmp_path / "ft"
    work.mkdir()
    evil = _evil_checkpoint(work / "iter_9.pth", RunsExec(marker))
    if how == "load_from":
        opts = ["--cfg-options", f"load_from={evil}", _exp(tmp_path)]
    else:  # mmengine resumes from the file named in last_checkpoint
        (work / "last_checkpoint").write_text(str(evil))
        opts = ["--resume", "--cfg-options", _exp(tmp_path)]
    assert _tool("train")([str(trained["cfg"]), "--work-dir", str(work), *opts]) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert f"error: {evil}: refused to load" in err and "builtins.exec" in err and "Traceback" not in err


def test_search_resume_refuses_malicious_supernet_checkpoint(tmp_path, trained, capsys):
    work = tmp_path / "adl"
    shutil.copytree(trained["search"], work)
    marker = tmp_path / "MARKER"
    torch.save({"trainer": RunsShell(marker), "strategy": {}, "record": {}}, work / "supernet.pth")
    rc = _tool("search")([str(ADL), "--work-dir", str(work), "--resume", "--cfg-options",
                          *adl_opts(trained["tmp"], 2)])
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists()
    assert f"error: {work / 'supernet.pth'}: refused to load" in err and "posix.system" in err
    with History(work / "history.sqlite") as h:
        assert [s.step for s in h.steps()] == [1]  # nothing trained, nothing lost


def test_search_resume_refuses_malicious_history_state(tmp_path, trained, capsys):
    work = tmp_path / "adl"
    shutil.copytree(trained["search"], work)
    marker = tmp_path / "MARKER"
    buf = io.BytesIO()
    torch.save({"one_shot": True, "queue": RunsExec(marker)}, buf)
    with sqlite3.connect(work / "history.sqlite") as db:
        assert db.execute("UPDATE meta SET value = ? WHERE key = 'strategy_state'", (buf.getvalue(),)).rowcount == 1
    rc = _tool("search")([str(ADL), "--work-dir", str(work), "--resume", "--cfg-options",
                          *adl_opts(trained["tmp"], 2)])
    err = capsys.readouterr().err
    assert rc == 2 and not marker.exists()
    assert f"error: {work / 'history.sqlite'} (meta row 'strategy_state'): refused to load" in err
    assert "builtins.exec" in err and "Traceback" not in err


def test_real_checkpoint_evaluates_and_resumes(tmp_path, trained, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # a user's setting changes nothing
    out = tmp_path / "test.json"
    assert _tool("test")([str(trained["cfg"]), str(trained["ckpt"]), "--work-dir", str(tmp_path / "t"),
                          "--json", str(out), "--cfg-options", _exp(tmp_path, "test")]) == 0
    assert "mIoU" in out.read_text() and "metrics:" in capsys.readouterr().out
    work = tmp_path / "ft"
    shutil.copytree(trained["ckpt"].parent, work)
    (work / "last_checkpoint").write_text(str(work / "iter_2.pth"))
    assert _tool("train")([str(trained["cfg"]), "--work-dir", str(work), "--resume",
                           "--cfg-options", "train_cfg.max_iters=3", _exp(tmp_path, "train")]) == 0
    assert safe_torch_load(work / "iter_3.pth")["meta"]["iter"] == 3
    logs = sorted(work.glob("*/*.log"))
    assert any("resumed epoch: 0, iter: 2" in p.read_text() for p in logs), logs


@pytest.mark.parametrize("change", ["drop_and_add", "reshape"])
def test_test_tool_refuses_mismatched_weights(tmp_path, trained, capsys, change):
    ck = safe_torch_load(trained["ckpt"])
    sd = dict(ck["state_dict"])
    first = next(k for k, v in sd.items() if v.ndim == 4)
    if change == "drop_and_add":
        del sd[first]
        sd["decode_head.not_in_model.weight"] = torch.zeros(3)
        expect = [f"1 weight(s) missing from the checkpoint: {first}",
                  "1 weight(s) unexpected (not in the model): decode_head.not_in_model.weight"]
    else:
        sd[first] = torch.zeros(1, 1, 1, 1)
        expect = [f"1 weight(s) with another shape: {first} (checkpoint (1, 1, 1, 1)"]
    bad = tmp_path / "bad.pth"
    torch.save({"meta": ck["meta"], "state_dict": sd}, bad)
    assert _tool("test")([str(trained["cfg"]), str(bad), "--work-dir", str(tmp_path / "t"),
                          "--cfg-options", _exp(tmp_path)]) == 2
    out = capsys.readouterr()
    assert f"error: {bad}: does not match the model" in out.err and "random weights" in out.err
    assert all(e in out.err for e in expect), out.err
    assert "metrics:" not in out.out
