"""Orchestration: workers, shards, merge and Dask give the bytes of a single-process run."""

from __future__ import annotations

import concurrent.futures as cf
import filecmp
import time

import pytest

from gptextures import DatasetSpec, Level, TextureSpec, presets
from gptextures.generation import (
    generate,
    generate_sharded,
    merge,
    output_paths,
    parse_shard,
)
from gptextures.io import blocks as blocks_mod
from gptextures.io import hdf5 as h5io
from gptextures.io import load
from gptextures.io.hdf5 import block_size, render_block

SPEC = presets.get("tiny")


def assert_same_file(a, b):
    """Byte-identical files (and so identical datasets and attributes)."""
    assert filecmp.cmp(a, b, shallow=False), f"{a} and {b} differ"
    assert h5io.content_digest(a) == h5io.content_digest(b)
# Odd sizes so that blocks, shards and files do not line up.
ODD = DatasetSpec(
    name="odd", version="1", seed=7,
    texture=TextureSpec(size=(32, 48), levels=(Level("a", (1.0, 1.5)), Level("b", (4.0, 5.0)),
                                               Level("c", (2.0, 3.0)))),
    splits={"train": 3, "test": 2},
)


def _same_hf(a, b):
    names = sorted(p.name for p in (a / "data").iterdir())
    assert names == sorted(p.name for p in (b / "data").iterdir())
    for n in names:
        assert filecmp.cmp(a / "data" / n, b / "data" / n, shallow=False), n


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    res = generate(ODD, out, formats="hdf5,hf", workers=1, rows_per_file=5)
    return res


def test_single_run_summary(single):
    assert single.counts == {"train": 24, "test": 16}
    assert single.generated == 2 * 40 and single.resumed == 0
    assert single.bytes == sum(
        p.stat().st_size if p.is_file() else sum(q.stat().st_size for q in p.rglob("*")
                                                 if q.is_file())
        for p in single.paths.values())
    assert single.fingerprint == ODD.fingerprint and single.images_per_second > 0
    d = load(single.paths["hdf5"], "train")
    assert d.images.tobytes() == load(ODD, "train").images.tobytes()


@pytest.mark.parametrize("transport", ["slot", "chunks"])
def test_two_worker_processes_are_byte_identical(tmp_path, single, monkeypatch, transport):
    """Worker processes hand HDF5 blocks back through the mapped scratch file (or, compared in
    the io benchmark, pickled through the pool's pipes): the same bytes either way."""
    from gptextures import generation
    from gptextures.io.hdf5 import writer

    monkeypatch.setattr(writer, "POOL_TRANSPORT", transport)
    monkeypatch.setattr(generation, "LOCAL_THREADS", False)  # no task on threads
    res = generate(ODD, tmp_path, formats="hdf5,hf", workers=2, rows_per_file=5)
    assert res.workers == 2 and res.executor == "2 worker processes"
    assert_same_file(res.paths["hdf5"], single.paths["hdf5"])
    _same_hf(res.paths["hf"], single.paths["hf"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd-hf", "odd.h5"]  # no scratch


def test_two_threads_are_byte_identical(tmp_path, single):
    """A run too small to repay starting worker processes runs on threads of this process;
    compressed HDF5 too (its threads hand back images that the writer thread compresses)."""
    res = generate(ODD, tmp_path, formats="hdf5,hf", workers=2, rows_per_file=5)
    assert res.workers == 2 and res.executor == "2 threads"
    assert_same_file(res.paths["hdf5"], single.paths["hdf5"])
    _same_hf(res.paths["hf"], single.paths["hf"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd-hf", "odd.h5"]
    one = generate(ODD, tmp_path / "gzip-1", compression="gzip").paths["hdf5"]
    two = generate(ODD, tmp_path / "gzip-2", compression="gzip", workers=2)
    assert two.executor == "2 threads"
    assert_same_file(two.paths["hdf5"], one)


_REAL_RENDER_BLOCK = blocks_mod.render_block


def _slow_render_block(*args):
    """``render_block``, slow enough for a pool to come up while blocks remain (module-level:
    worker processes unpickle it by name and import this module's real ``render_block``)."""
    time.sleep(0.2)
    return _REAL_RENDER_BLOCK(*args)


def test_threads_then_worker_processes_are_byte_identical(tmp_path, single, monkeypatch):
    """Tasks go to threads until the worker processes started mid-run are up, then to them:
    the bytes do not depend on which ran what."""
    from gptextures import generation

    monkeypatch.setattr(generation, "POOL_START_S", 0.0)  # start the pool at the first timing
    monkeypatch.setattr(generation, "POOL_TIMED_S", 0.0)
    real_start = generation._Pool.start

    def start_and_wait(self):  # the pool is up before the next task: no race with the threads
        real_start(self)
        self._started.join()

    monkeypatch.setattr(generation._Pool, "start", start_and_wait)
    monkeypatch.setattr(blocks_mod, "render_block", _slow_render_block)
    res = generate(ODD, tmp_path, formats="hdf5", workers=2)
    assert res.executor == "2 threads, then 2 worker processes"
    assert_same_file(res.paths["hdf5"], single.paths["hdf5"])


def test_shards_then_merge_are_byte_identical(tmp_path, single):
    parts = {"hdf5": [], "hf": []}
    for i in (1, 0, 2):
        res = generate(ODD, tmp_path, formats="hdf5,hf", shard=f"{i}/3", rows_per_file=5)
        for f, p in res.paths.items():
            parts[f].append(p)
    assert parts["hdf5"][0].name == "odd.shard-00001-of-00003.h5"
    h5 = merge(parts["hdf5"], tmp_path / "m.h5")
    assert_same_file(h5, single.paths["hdf5"])
    folder = merge(parts["hf"], tmp_path / "m-hf")
    _same_hf(folder, single.paths["hf"])
    with pytest.raises(ValueError, match="mix of formats"):
        merge([parts["hdf5"][0], parts["hf"][0]], tmp_path / "x")


def test_generate_sharded_helper(tmp_path, single):
    paths = generate_sharded(ODD, tmp_path, shards=2, formats="hdf5")
    assert_same_file(paths["hdf5"], single.paths["hdf5"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.h5"]


def test_refuses_complete_output_and_overwrites_on_request(tmp_path):
    res = generate(SPEC, tmp_path)
    before = res.paths["hdf5"].read_bytes()
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate(SPEC, tmp_path)
    assert res.paths["hdf5"].read_bytes() == before
    again = generate(SPEC, tmp_path, overwrite=True)
    assert again.generated == 32
    assert_same_file(again.paths["hdf5"], res.paths["hdf5"])


def test_resume_counts(tmp_path):
    w = h5io.HDF5Writer.open(output_paths(SPEC, tmp_path)["hdf5"], SPEC)
    w.write("train", 0, render_block(SPEC.to_json(), "train", 0, 6))
    w.close()
    res = generate(SPEC, tmp_path)
    assert res.resumed == 6 and res.generated == 26


@pytest.mark.parametrize("text,expected", [("0/1", (0, 1)), ("3/4", (3, 4)), (" 1 / 2 ", (1, 2)),
                                           (None, (0, 1)), ((2, 5), (2, 5))])
def test_parse_shard(text, expected):
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text", ["1", "a/b", "2/2", "-1/3", "0/0", "1/2/3", ""])
def test_parse_shard_rejects(text):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="format: unknown format 'zip'"):
        generate(SPEC, tmp_path, formats="zip")
    with pytest.raises(ValueError, match="workers: must be >= 1, got 0"):
        generate(SPEC, tmp_path, workers=0)
    with pytest.raises(TypeError, match="spec"):
        generate("tiny", tmp_path)
    with pytest.raises(ValueError, match="split"):
        generate(SPEC, tmp_path, splits=["val"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        generate(SPEC, tmp_path / "file")
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]


def test_block_size_bounds():
    big = presets.get("golkar2018")
    assert block_size(big, 100, 2) == 4  # 16 MiB of 4 MiB images
    assert block_size(SPEC, 32, 2) == 4  # small runs still spread over workers
    assert block_size(SPEC, 10_000, 1) == 64


def test_dask_local_cluster_is_byte_identical(tmp_path, single):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        res = generate(ODD, tmp_path, formats="hdf5,hf", client=client, rows_per_file=5)
    assert_same_file(res.paths["hdf5"], single.paths["hdf5"])
    _same_hf(res.paths["hf"], single.paths["hf"])


def test_dask_scheduler_address(tmp_path, single):
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp://", host="127.0.0.1",
                                  dashboard_address=None) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        res = generate(ODD, tmp_path, formats="hdf5", scheduler=cluster.scheduler_address)
    assert_same_file(res.paths["hdf5"], single.paths["hdf5"])
    with pytest.raises(ValueError, match="not both"):
        generate(ODD, tmp_path / "x", client=object(), scheduler="tcp://127.0.0.1:1")


def _writer_threads():
    import threading

    return [t for t in threading.enumerate() if t.name.startswith("gptextures-hdf5-writer")]


def test_writer_thread_failure_surfaces_and_the_partial_resumes(tmp_path, monkeypatch):
    """The writer thread fails on the 3rd block: generate raises that very exception (with the
    writer's frames), rendering stops, every earlier block is in the partial file, and a rerun
    finishes it with the bytes of an uninterrupted run."""
    import errno
    import threading
    import traceback

    clean = generate(SPEC, tmp_path / "clean").paths["hdf5"]
    bs = block_size(SPEC, SPEC.num_samples("train") * 2, 1)
    assert bs == 8  # 4 blocks: train 0-7, 8-15, test 0-7, 8-15
    real = h5io.HDF5Writer.write
    calls = {"n": 0}
    failed = threading.Event()

    def failing_write(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            failed.set()
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *a, **k)

    renders = []
    real_render = blocks_mod.render_block

    def render(*a):
        renders.append(a[1:4])
        if len(renders) == 4:  # the 4th block is rendered only once the writer has failed
            assert failed.wait(30)
        return real_render(*a)

    monkeypatch.setattr(h5io.HDF5Writer, "write", failing_write)
    monkeypatch.setattr(blocks_mod, "render_block", render)
    out = tmp_path / "out"
    with pytest.raises(OSError, match="cannot write .*No space left on device") as info:
        generate(SPEC, out)
    cause = info.value.__cause__  # the writer thread's exception, with its own frames
    assert any(f.name == "failing_write" for f in traceback.extract_tb(cause.__traceback__))
    assert len(renders) == 4  # rendering stopped at the first block after the failure
    assert not _writer_threads()
    partial = h5io.partial_path(output_paths(SPEC, out)["hdf5"])
    assert partial.exists() and not output_paths(SPEC, out)["hdf5"].exists()
    with h5io.HDF5Dataset(partial, allow_incomplete=True) as ds:
        assert (ds.written("train"), ds.written("test")) == (16, 0)
        assert ds.images("train").tobytes() == load(SPEC, "train").images.tobytes()
    monkeypatch.undo()
    res = generate(SPEC, out)
    assert res.resumed == 16 and res.generated == 16
    assert_same_file(res.paths["hdf5"], clean)


def test_interrupt_while_rendering_leaves_a_resumable_file(tmp_path, monkeypatch):
    clean = generate(ODD, tmp_path / "clean").paths["hdf5"]
    real_render = blocks_mod.render_block
    calls = {"n": 0}

    def render(*a):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real_render(*a)

    monkeypatch.setattr(blocks_mod, "render_block", render)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        generate(ODD, out)
    assert not _writer_threads()
    bs = block_size(ODD, ODD.num_samples("train") + ODD.num_samples("test"), 1)
    with h5io.HDF5Dataset(h5io.partial_path(output_paths(ODD, out)["hdf5"]),
                          allow_incomplete=True) as ds:
        done = ds.written("train")
    assert done in (0, bs, 2 * bs)  # whole blocks only
    monkeypatch.undo()
    res = generate(ODD, out)
    assert res.resumed == done
    assert_same_file(res.paths["hdf5"], clean)


@pytest.mark.parametrize("fmt", ["hdf5", "hf"])
def test_interrupt_with_worker_threads_leaves_a_resumable_output(tmp_path, single, monkeypatch,
                                                                 fmt):
    """Ctrl-C while 2 worker threads work: generate waits for them (none is left running, so
    nothing writes into the output once its lock is released), the partial output is kept and
    a rerun finishes it with the bytes of an uninterrupted run."""
    import threading

    from gptextures.io import hf as hfio

    writer_cls = h5io.HDF5Writer if fmt == "hdf5" else hfio.HFWriter
    real_accept = writer_cls.accept
    calls = {"n": 0}

    def accept(self, task, result):  # runs in the main thread, as a signal handler would
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_accept(self, task, result)

    monkeypatch.setattr(writer_cls, "accept", accept)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        generate(ODD, out, formats=fmt, workers=2, rows_per_file=1)
    assert not [t for t in threading.enumerate() if t.name.startswith("gptextures-worker")]
    path = output_paths(ODD, out, fmt)[fmt]
    assert not path.exists() and not (out / (path.name + ".lock")).exists()
    partial = out / (path.name + ".partial")
    if fmt == "hdf5":
        with h5io.HDF5Dataset(partial, allow_incomplete=True) as ds:
            kept = ds.written("train") + ds.written("test")
    else:  # one row per file: the finished files
        kept = len(list((partial / "data").glob("*.parquet")))
    monkeypatch.undo()
    res = generate(ODD, out, formats=fmt, workers=2, rows_per_file=1)
    total = sum(ODD.num_samples(s) for s in ODD.splits)
    assert res.resumed == kept and res.generated == total - kept
    if fmt == "hdf5":
        assert_same_file(res.paths["hdf5"], single.paths["hdf5"])
    else:
        clean = generate(ODD, tmp_path / "clean", formats="hf", rows_per_file=1)
        _same_hf(res.paths["hf"], clean.paths["hf"])


def test_a_second_interrupt_while_worker_threads_finish_still_closes_everything(
        tmp_path, monkeypatch):
    """Ctrl-C twice: the second one arrives while generate waits for its worker threads. It is
    held until they are done, then raised; the writer is closed (no writer thread left), the
    lock released, and no thread is left writing into the output."""
    import threading

    from gptextures import generation

    def accept(self, task, result):
        raise KeyboardInterrupt  # the first Ctrl-C

    real_shutdown = cf.ThreadPoolExecutor.shutdown
    calls = {"n": 0}

    def shutdown(self, wait=True, *, cancel_futures=False):
        calls["n"] += 1
        if calls["n"] == 1 and self._thread_name_prefix == "gptextures-worker":
            raise KeyboardInterrupt  # the second, while waiting for the threads
        return real_shutdown(self, wait=wait, cancel_futures=cancel_futures)

    monkeypatch.setattr(h5io.HDF5Writer, "accept", accept)
    monkeypatch.setattr(cf.ThreadPoolExecutor, "shutdown", shutdown)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        generate(ODD, out, workers=2)
    assert calls["n"] >= 2  # waited again after the second interrupt
    names = [t.name for t in threading.enumerate()]
    assert not [n for n in names if n.startswith(("gptextures-worker", "gptextures-hdf5"))]
    path = output_paths(ODD, out)["hdf5"]
    assert not (out / (path.name + ".lock")).exists()
    assert sorted(p.name for p in out.iterdir()) == [path.name + ".partial"]
    monkeypatch.undo()
    assert generation.generate(ODD, out, workers=2).generated > 0  # resumes


def test_an_error_in_a_worker_thread_surfaces_and_the_output_resumes(tmp_path, single,
                                                                     monkeypatch):
    """A task that fails on a worker thread: generate raises its exception, leaves no worker
    thread and no lock, and a rerun finishes the output with the bytes of a clean run."""
    import threading

    calls = {"n": 0}
    real = blocks_mod.render_block

    def render(*a):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ValueError("render failed on a worker thread")
        return real(*a)

    monkeypatch.setattr(blocks_mod, "render_block", render)
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="render failed on a worker thread"):
        generate(ODD, out, workers=2)
    assert not [t for t in threading.enumerate() if t.name.startswith("gptextures-worker")]
    path = output_paths(ODD, out)["hdf5"]
    assert not (out / (path.name + ".lock")).exists()
    monkeypatch.undo()
    res = generate(ODD, out, workers=2)
    assert_same_file(res.paths["hdf5"], single.paths["hdf5"])


def test_the_pool_rule_reads_its_timing():
    """_Timing extrapolates the threads' speed to the work left and asks pool_saving: with
    other jobs holding the spare core it starts no pool; with the core idle it does."""
    from gptextures.generation import POOL_START_S, _Timing

    class Clock:
        def __init__(self):
            self.t = 0.0

        def __call__(self):
            return self.t

    def timing(idle_ticks_per_s):
        wall, cpu = Clock(), Clock()
        idle = lambda: (int(idle_ticks_per_s * wall.t), int(200 * wall.t))  # noqa: E731
        t = _Timing(wall=wall, cpu=cpu, idle=idle, cores=lambda: 2)
        fut = cf.Future()
        t.started(fut, 10)
        assert not t.pool_pays(1000, 2)  # nothing finished yet
        fut.set_result(None)
        wall.t, cpu.t = 0.1, 0.1
        assert not t.pool_pays(1000, 2)  # timed for less than POOL_TIMED_S
        wall.t, cpu.t = 1.0, 1.0  # 10 samples in 1 s on one busy core: 1000 more take 100 s
        return t

    assert timing(idle_ticks_per_s=100).pool_pays(1000, 2)  # half of 2 cores idle: saves 50 s
    assert not timing(idle_ticks_per_s=0).pool_pays(1000, 2)  # another job holds the core
    t = timing(idle_ticks_per_s=100)
    # 1000 samples save 50 s; 10 samples (1 s of work) would save 0.5 s < POOL_START_S
    assert POOL_START_S > 0.5 and not t.pool_pays(10, 2)


def test_a_pool_is_started_only_when_it_is_expected_to_save_its_start():
    """The threads of ``--workers`` keep ``busy`` cores busy (CPU time over wall time); worker
    processes could at best spread the same work over ``min(workers, cores)`` cores, so they
    save ``left * (1 - busy / min(workers, cores))`` seconds of the ``left`` still to do."""
    from gptextures.generation import POOL_START_S, pool_saving

    # threads held back by the GIL (one busy core): 2 processes on 2 cores halve what is left
    assert pool_saving(4.0, 1.0, 2, 2) == pytest.approx(2.0)
    assert pool_saving(1.5, 1.0, 2, 2) < POOL_START_S <= pool_saving(2.0, 1.0, 2, 2)
    # threads that keep 1.6 of 2 cores busy: 2 s left saves 0.4 s, less than a pool's start
    assert pool_saving(2.0, 1.6, 2, 2) == pytest.approx(0.4)
    assert pool_saving(2.0, 1.6, 2, 2) < POOL_START_S
    assert pool_saving(4.0, 2.0, 2, 2) == 0.0  # the threads already fill the cores
    assert pool_saving(4.0, 2.3, 2, 2) == 0.0  # never negative
    # more workers than cores help no more than the cores; 16 cores, 4 of them busy
    assert pool_saving(4.0, 1.0, 8, 2) == pytest.approx(2.0)
    assert pool_saving(10.0, 4.0, 16, 16) == pytest.approx(7.5)
    # the machine's idle cores bound what processes could use: none idle (another job holds
    # the second core) saves nothing; 4 of 16 idle beside 4 busy: 10 s take 5 s
    assert pool_saving(4.0, 1.0, 2, 2, spare_cores=0.0) == 0.0
    assert pool_saving(4.0, 1.0, 2, 2, spare_cores=1.0) == pytest.approx(2.0)
    assert pool_saving(10.0, 4.0, 16, 16, spare_cores=4.0) == pytest.approx(5.0)
