"""Candidates in parallel on Ray actors (densenas/parallel.py, densenas/ray_executor.py): the same rows as one
process in batch mode, a node killed mid-search, bad flags refused fast.

Every Ray process a test starts listens on the loopback address only and is shut down by the test's fixture,
failure or not. Ray 2.60 turns ``node_ip_address="127.0.0.1"`` (``ray.init(_node_ip_address=...)``, the
``head_node_args`` of ``ray.cluster_utils.Cluster``) into the machine's address and its GCS, raylet and workers
listen on every interface; with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` in the environment *before* ``ray`` is
imported (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``), ``127.0.0.1`` is kept and all of them bind to it.
:func:`listening_sockets` checks that from ``/proc`` while each test runs. Each instance gets a fresh temp dir
under /tmp (short: Ray's unix sockets live there), so no stale local cluster is picked up.
"""
from __future__ import annotations

import os

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: see the module docstring

import logging  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

ray = pytest.importorskip("ray")
import ray.cloudpickle  # noqa: E402

import toy  # noqa: E402
from _tools import tool  # noqa: E402
from densenas.evaluation.common import RunningMean  # noqa: E402
from densenas.history import History  # noqa: E402
from densenas.loop import Budget, default_hooks, run  # noqa: E402
from densenas.parallel import InProcessExecutor, ParallelCfg  # noqa: E402
from densenas.ray_executor import RayExecutor  # noqa: E402
from densenas.result import Result  # noqa: E402
from densenas.strategies import build_strategy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}

# Ray workers cannot import the test modules: ship their classes by value
ray.cloudpickle.register_pickle_by_value(toy)
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ------------------------------------------------------------------------------------------- helpers
def descendants(pid: int) -> set[int]:
    """``pid`` and every process below it (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        if p not in out:
            out.add(p)
            todo += children.get(p, [])
    return out


def listening_sockets(pids: set[int]) -> list[tuple[str, int]]:
    """(hex local address, pid) of every listening TCP socket the processes ``pids`` hold."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = pid
        except OSError:
            continue
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            f = line.split()
            if f[3] == "0A" and f[9] in inodes:  # 0A: LISTEN
                out.append((f[1].split(":")[0], inodes[f[9]]))
    return out


def assert_loopback_only(pids: set[int]) -> None:
    socks = listening_sockets(pids)
    assert socks, "no listening socket found: the check would prove nothing"
    wide = [s for s in socks if s[0] not in LOOPBACK]
    assert not wide, f"Ray processes listen beyond 127.0.0.1: {wide}"


class MeanToy(toy.ToyEvaluator, RunningMean):
    """The toy reward plus a trace of the early-stopping running mean it saw (so the snapshot rule shows in
    the rewards), with ``restore`` like the proxy trainer; records the node each evaluation ran on."""

    def __init__(self, calls_file: str | None = None, hold_on_node: str | None = None, hold_file: str | None = None):
        super().__init__()
        self.stage1_rewards: list[float] = []
        self.calls_file, self.hold_on_node, self.hold_file = calls_file, hold_on_node, hold_file

    def evaluate(self, arch, seed=0):
        if self.calls_file:
            with open(self.calls_file, "a") as f:
                f.write(f"{seed} {arch.key}\n")
        if self.hold_on_node and ray.get_runtime_context().get_node_id() == self.hold_on_node:
            Path(self.hold_file).write_text(str(seed))
            deadline = time.monotonic() + 120  # the test kills this node now; never returns normally
            while time.monotonic() < deadline:
                time.sleep(0.05)
            raise RuntimeError("the node was not killed")
        mean = self.running_mean
        r = toy.reward_of(arch)
        self.stage1_rewards.append(r)
        reward = r + 0.01 * (mean or 0.0)
        return Result(reward=reward, metrics={"stage1_reward": r, "mean_seen": -1.0 if mean is None else mean},
                      stage=1)


def rows(path: Path) -> list[tuple]:
    with History(path) as h:
        assert not h.running()
        return [(c.id, c.arch.key, c.seed, c.status, c.result.reward, c.result.metrics.get("mean_seen"))
                for c in h.finished()]


def search(path: Path, executor, n: int, batch: int, strategy: str = "surrogate", seed: int = 3,
           mode: str = "batch", log=None):
    space = toy.ToySpace()
    with History(path) as h:
        return run(space, build_strategy({"type": strategy, "seed": seed}, space), MeanToy(), h,
                   Budget(candidates=n, seed=seed, mode=mode, batch=batch), executor=executor,
                   hooks=default_hooks(log, live=False))


@pytest.fixture
def local_ray():
    """A fresh local Ray instance on 127.0.0.1 (2 CPUs), shut down and removed after the test."""
    tmp = tempfile.mkdtemp(prefix="dnray", dir="/tmp")
    try:
        ray.init(num_cpus=2, _node_ip_address="127.0.0.1", include_dashboard=False, _temp_dir=tmp,
                 logging_level=logging.WARNING, log_to_driver=False)
        yield tmp
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------------------------- tests
def test_two_ray_workers_in_batch_mode_give_the_rows_of_one_process(tmp_path, local_ray):
    n, batch = 12, 2
    space = toy.ToySpace()
    ref = search(tmp_path / "one.sqlite", InProcessExecutor(MeanToy(), space), n, batch)
    lines: list[str] = []
    ex = RayExecutor(MeanToy(), space, ParallelCfg(workers=2, cpus_per_worker=1), log=lines.append)
    try:
        assert_loopback_only(descendants(os.getpid()))
        out = search(tmp_path / "ray.sqlite", ex, n, batch, log=lines.append)
    finally:
        ex.close()
    assert rows(tmp_path / "ray.sqlite") == rows(tmp_path / "one.sqlite")  # archs, seeds, rewards, mean seen
    assert out.best.arch == ref.best.arch and out.done == n
    assert out.best.result.reward >= 1.0  # the surrogate still finds the toy's optimum
    seen = [r[-1] for r in rows(tmp_path / "ray.sqlite")]
    assert seen[0] == seen[1] == -1.0 and seen[2] == seen[3] != -1.0  # a batch shares the driver's snapshot
    ran = [ln for ln in lines if " ran on w" in ln]
    assert len(ran) == n and {ln.split(" ran on ")[1].split()[0] for ln in ran} == {"w1", "w2"}
    assert any("shipped once" in ln and "MB" in ln for ln in lines)


def test_async_mode_keeps_workers_busy_and_finishes_every_row(tmp_path, local_ray):
    space = toy.ToySpace()
    ex = RayExecutor(MeanToy(), space, ParallelCfg(workers=2, cpus_per_worker=1, mode="async"), log=print)
    try:
        out = search(tmp_path / "a.sqlite", ex, 8, 2, strategy="evolution", mode="async")
    finally:
        ex.close()
    got = rows(tmp_path / "a.sqlite")
    assert out.done == 8 and len(got) == 8 and len({r[1] for r in got}) == 8
    assert [r[2] for r in got] == list(range(3, 11))  # candidate i trains with seed + i


def test_a_node_killed_mid_candidate_is_retried_elsewhere(tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    tmp = tempfile.mkdtemp(prefix="dncl", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", tmp)  # the cluster's address file too (not the shared /tmp/ray)
    (Path(tmp) / "ray").mkdir()
    cluster = None
    try:
        common = dict(node_ip_address="127.0.0.1", include_dashboard=False, object_store_memory=80 * 2**20)
        cluster = Cluster(initialize_head=True, head_node_args=dict(num_cpus=2, temp_dir=tmp, **common))
        doomed = cluster.add_node(num_cpus=1, **common)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, logging_level=logging.WARNING, log_to_driver=False)
        calls, hold = tmp_path / "calls.txt", tmp_path / "held.txt"
        space, lines = toy.ToySpace(), []
        ev = MeanToy(str(calls), hold_on_node=doomed.node_id, hold_file=str(hold))
        ex = RayExecutor(ev, space, ParallelCfg(workers=2, cpus_per_worker=1), log=lines.append)
        try:
            assert set(ex.nodes.values()) == {cluster.head_node.node_id, doomed.node_id}  # spread
            assert_loopback_only(descendants(os.getpid()))
            box: dict = {}
            worker = threading.Thread(target=lambda: box.setdefault("out", search(
                tmp_path / "h.sqlite", ex, 6, 2, strategy="evolution", log=lines.append)))
            worker.start()
            deadline = time.monotonic() + 60
            while not hold.exists() and time.monotonic() < deadline:  # a candidate is in flight there
                time.sleep(0.05)
            assert hold.exists(), "no candidate reached the second node"
            cluster.remove_node(doomed)
            worker.join(timeout=120)
            assert not worker.is_alive()
        finally:
            ex.close()
        held_seed = int(hold.read_text())
        got = rows(tmp_path / "h.sqlite")
        assert box["out"].done == 6 and len(got) == 6 and all(r[3] == "ok" for r in got)
        evals = [ln.split()[0] for ln in calls.read_text().splitlines()]
        assert sorted(evals) == sorted([str(r[2]) for r in got] + [str(held_seed)])  # only it ran twice
        assert any("died" in ln and "retried on w3" in ln for ln in lines), lines
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)


# ------------------------------------------------------------------------------------------- bad input
def _search_tool():
    return tool("search")


def test_bad_workers_and_unreachable_address_fail_fast(tmp_path, capsys):
    cfg = str(ROOT / "configs/search/auxcell_proxy.py")
    assert _search_tool()([cfg, "--work-dir", str(tmp_path / "a"), "--workers", "0"]) == 2
    assert "--workers must be at least 1, got 0" in capsys.readouterr().err
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    rc = _search_tool()([cfg, "--work-dir", str(tmp_path / "b"), "--address", f"127.0.0.1:{port}"])
    assert rc == 2 and time.monotonic() - t0 < 15
    err = capsys.readouterr().err
    assert f"no Ray cluster at 127.0.0.1:{port}" in err and "ray start --head" in err
    assert _search_tool()([cfg, "--work-dir", str(tmp_path / "c"), "--cfg-options", "parallel.mode=fast"]) == 2
    assert "parallel.mode must be one of ['pipeline', 'batch', 'async']" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not ray.is_initialized()


def test_parallel_cfg_defaults_and_checks():
    assert ParallelCfg().mode == "pipeline" and ParallelCfg().workers == "auto"
    assert ParallelCfg(workers=2).threads(2) == 1 and ParallelCfg(workers=1).threads(2) == 2
    assert ParallelCfg(workers=4).threads(2) == 1 and ParallelCfg(workers=2, cpus_per_worker=3).threads(2) == 3
    assert ParallelCfg(workers=3).batch_size == 3 and ParallelCfg(workers=3, batch=5).batch_size == 5
    assert not ParallelCfg(workers=1).use_ray and ParallelCfg(address="auto").use_ray and ParallelCfg(workers=2).use_ray
    for bad in (dict(workers=0), dict(batch=0), dict(retries=-1), dict(gpus_per_worker=-1), dict(mode="x"),
                dict(workers=True), dict(address=""), dict(workers="all")):
        with pytest.raises(ValueError, match="parallel\\."):
            ParallelCfg(**bad)


def test_workers_auto_is_one_candidate_per_core(monkeypatch, tmp_path):
    from densenas import parallel
    from densenas.build import parallel_cfg
    from densenas.config import ConfigError, load_config

    monkeypatch.delenv(parallel.AUTO_ENV, raising=False)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 6)

    class Plenty:  # whatever else this machine runs, memory for every core
        available = 64 * parallel.WORKER_MEMORY
    monkeypatch.setattr("psutil.virtual_memory", lambda: Plenty)
    assert parallel.auto_workers() == (6, "6 CPU core(s), one one-thread candidate each")
    assert parallel.auto_workers(one_shot=True)[0] == 1 and parallel.auto_workers(cuda_devices=2)[0] == 2
    assert ParallelCfg().workers == "auto" and ParallelCfg().count == 6 and ParallelCfg().batch_size == 6 and ParallelCfg().use_ray
    # the shipped default search, as tools/search.py resolves it: every core, in batches of that size
    cfg = load_config(str(ROOT / "configs/search/auxcell_proxy.py"), [])
    pcfg = parallel_cfg(cfg)
    assert (pcfg.workers, pcfg.batch_size, pcfg.threads(6), pcfg.use_ray) == (6, 6, 1, True)
    assert "6 CPU core" in pcfg.auto_reason
    # a one-shot search trains one supernet: auto is 1 there (no Ray)
    one_shot = parallel_cfg(load_config(str(ROOT / "configs/search/irnas_denoise_proxy.py"), []))
    assert one_shot.workers == 1 and not one_shot.use_ray
    # too little memory for one worker per core
    class Mem:
        available = 5 * parallel.WORKER_MEMORY // 2
    monkeypatch.setattr("psutil.virtual_memory", lambda: Mem)
    assert parallel.auto_workers()[0] == 2
    monkeypatch.setenv(parallel.AUTO_ENV, "3")
    assert parallel.auto_workers() == (3, "DENSENAS_WORKERS=3") and parallel_cfg(cfg).workers == 3
    monkeypatch.setenv(parallel.AUTO_ENV, "zero")
    with pytest.raises(ConfigError, match="DENSENAS_WORKERS='zero'"):
        parallel_cfg(cfg)


def test_move_to_leaves_frozen_archs_alone_and_moves_tensors_beside_them():
    """An evaluator holding an Arch (frozen, tuple choices) next to tensors: the tensors move, the arch is the
    same object (a rebuilt tuple assigned to a frozen field raised FrozenInstanceError on the Ray path)."""
    import torch

    from densenas.arch import Arch
    from densenas.ray_executor import move_to
    from densenas.strategies.base import RandomSearch  # any densenas class with a __dict__

    arch = Arch("nasfcos", {"cell0.op": "conv3x3", "cell0.in0": 1})
    holder = RandomSearch.__new__(RandomSearch)
    holder.fixed = arch
    holder.pair = (arch, torch.zeros(2, dtype=torch.float64))
    holder.dev = torch.device("cpu")
    moved = move_to(holder, "meta")
    assert moved is holder and holder.fixed is arch and holder.pair[0] is arch
    assert holder.pair[1].device.type == "meta" and holder.dev == torch.device("meta")
    untouched = (arch, 1, "x")
    assert move_to(untouched, "meta") is untouched


def test_auto_workers_is_one_when_candidates_are_timed_on_the_cpu(tmp_path, monkeypatch):
    """objective.cost=latency_ms measured on the CPU: workers='auto' runs one candidate at a time (a latency
    timed while another worker trains is that worker's too); with a lookup table, or params, all cores."""
    from densenas.build import parallel_cfg
    from densenas.config import load_config

    monkeypatch.setattr("densenas.build.auto_workers", lambda gpus, one_shot: (2, "2 CPU core(s)"))
    cfg = Path(__file__).resolve().parents[1] / "configs/search/template_ort_proxy.py"
    timed = parallel_cfg(load_config(cfg, ["device=cpu"]))
    assert timed.workers == 1 and "disturbs the timing" in timed.auto_reason
    table = parallel_cfg(load_config(cfg, ["device=cpu", "objective.latency_table=lut.json"]))
    params = parallel_cfg(load_config(Path(cfg).with_name("template_proxy.py"), ["device=cpu"]))
    assert table.workers == 2 and params.workers == 2


def test_large_tensors_are_shared_zero_copy_and_keep_their_layout(local_ray):
    """Under shared_tensors() a large CPU tensor put into the object store comes back as a view of the store
    (two reads, one buffer: each worker of a node reads the same copy), in its own memory format; small
    tensors and parameters are copied as before, and outside the context every tensor is."""
    import torch

    from densenas.ray_share import MIN_BYTES, rebuild_tensor, reduce_tensor, shared_tensors

    feats = torch.randn(8, 24, 64, 48).contiguous(memory_format=torch.channels_last)
    assert feats.nbytes >= MIN_BYTES
    value = {"feats": feats, "small": torch.arange(4.0), "w": torch.nn.Parameter(torch.randn(600, 600))}
    with shared_tensors():
        ref = ray.put(value)
    a, b = ray.get(ref), ray.get(ref)
    assert a["feats"].data_ptr() == b["feats"].data_ptr()  # no copy: both are the store's bytes
    assert torch.equal(a["feats"], feats) and a["feats"].is_contiguous(memory_format=torch.channels_last)
    assert a["small"].data_ptr() != b["small"].data_ptr() and torch.equal(a["small"], value["small"])
    assert isinstance(a["w"], torch.nn.Parameter) and a["w"].data_ptr() != b["w"].data_ptr()
    c, d = (ray.get(ray.put(feats)) for _ in range(2))  # the reducer is gone after the context
    assert c.data_ptr() != d.data_ptr() and torch.equal(c, feats)
    # what cannot be one dense NumPy view is saved whole: a strided slice, a dtype NumPy lacks, a sparse tensor
    for t in (torch.randn(64, 64, 128)[:, ::2], torch.randn(1024, 1024, dtype=torch.bfloat16),
              torch.eye(1024).to_sparse()):
        kind, _ = reduced = reduce_tensor(t)
        back = rebuild_tensor(reduced)
        assert kind == "torch" and back.layout == t.layout and torch.equal(back.to_dense(), t.to_dense())
