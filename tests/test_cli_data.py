"""CLI data commands: output, errors and exit codes, kill-and-resume, corruption, preview, merge."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time

import h5py
import pytest

from gptextures import presets
from gptextures.cli import main
from gptextures.io import hdf5 as h5io

SPEC = presets.get("tiny")


def assert_same_file(a, b):
    """Byte-identical files (and so identical datasets and attributes)."""
    assert filecmp.cmp(a, b, shallow=False), f"{a} and {b} differ"
    assert h5io.content_digest(a) == h5io.content_digest(b)


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def tiny_h5(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli")
    assert main(["generate", "tiny", "--out", str(out), "--no-progress"]) == 0
    return out / "tiny.h5"


def test_presets(capsys):
    code, out, _ = run(capsys, "presets")
    assert code == 0
    for name in presets.names():
        assert name in out
    assert "approximate" in out and "1024x1024" in out
    code, out, _ = run(capsys, "presets", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    g = presets.get("golkar2018")
    assert rows["golkar2018"]["approx_bytes"] == 204 * (1024 * 1024 * 4 + 8 * 4)
    assert rows["golkar2018"]["samples"] == {"train": 4, "val": 100, "test": 100}
    assert rows["golkar2018"]["fingerprint"] == g.fingerprint


def test_generate_summary_and_refusal(tmp_path, capsys):
    code, out, err = run(capsys, "generate", "tiny", "--out", str(tmp_path), "--format",
                         "hdf5,hf", "--no-progress")
    assert code == 0, err
    assert SPEC.fingerprint in out and "train 16, test 16" in out
    assert "images/s" in out and "on disk" in out
    assert (tmp_path / "tiny.h5").is_file() and (tmp_path / "tiny-hf" / "README.md").is_file()
    before = (tmp_path / "tiny.h5").read_bytes()
    code, _, err = run(capsys, "generate", "tiny", "--out", str(tmp_path), "--no-progress")
    assert code == 2 and "already exists" in err and "--overwrite" in err
    assert (tmp_path / "tiny.h5").read_bytes() == before
    code, _, err = run(capsys, "generate", "tiny", "--out", str(tmp_path), "--overwrite",
                       "--no-progress")
    assert code == 0, err


def test_generate_progress_bar(tmp_path, capsys):
    code, _, err = run(capsys, "generate", "tiny", "--out", str(tmp_path))
    assert code == 0 and "32/32" in err


@pytest.mark.parametrize("argv,message", [
    (["--format", "zip"], "format: unknown format 'zip'"),
    (["--shard", "2/2"], "shard: need N >= 1 and 0 <= I < N"),
    (["--shard", "x"], "shard: expected 'I/N'"),
    (["--workers", "0"], "workers: must be >= 1"),
])
def test_generate_bad_options(tmp_path, capsys, argv, message):
    code, _, err = run(capsys, "generate", "tiny", "--out", str(tmp_path / "o"), *argv)
    assert code == 2 and message in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_unknown_preset_and_spec_files(tmp_path, capsys):
    code, _, err = run(capsys, "generate", "nope", "--out", str(tmp_path))
    assert code == 2 and "neither a preset" in err and "golkar2018" in err
    code, _, err = run(capsys, "generate", str(tmp_path / "missing.json"), "--out", str(tmp_path))
    assert code == 2 and "does not exist" in err
    d = SPEC.to_dict()
    del d["seed"]
    (tmp_path / "missing_field.json").write_text(json.dumps(d))
    code, _, err = run(capsys, "generate", str(tmp_path / "missing_field.json"), "--out",
                       str(tmp_path))
    assert code == 2 and "missing field(s) ['seed']" in err
    d = {**SPEC.to_dict(), "colour": "red"}
    (tmp_path / "extra.json").write_text(json.dumps(d))
    code, _, err = run(capsys, "generate", str(tmp_path / "extra.json"), "--out", str(tmp_path))
    assert code == 2 and "unknown field(s) ['colour']" in err
    d = {**SPEC.to_dict(), "seed": -3}
    (tmp_path / "wrong.json").write_text(json.dumps(d))
    code, _, err = run(capsys, "generate", str(tmp_path / "wrong.json"), "--out", str(tmp_path))
    assert code == 2 and "seed" in err
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run(capsys, "generate", str(tmp_path / "bad.json"), "--out", str(tmp_path))
    assert code == 2 and "not valid JSON" in err
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json"] * 4


def test_custom_spec_file_generates(tmp_path, capsys):
    (tmp_path / "spec.json").write_text(SPEC.to_json())
    code, out, err = run(capsys, "generate", str(tmp_path / "spec.json"), "--out",
                         str(tmp_path / "o"), "--split", "test", "--no-progress")
    assert code == 0, err
    with h5io.HDF5Dataset(tmp_path / "o" / "tiny.h5") as ds:
        assert ds.splits == ["test"]


def test_unwritable_directory(tmp_path, capsys):
    target = "/sys/gptextures-test-out"
    if os.access("/sys", os.W_OK) and not os.path.ismount("/sys"):
        pytest.skip("/sys is writable here")
    code, _, err = run(capsys, "generate", "tiny", "--out", target, "--no-progress")
    assert code == 2 and "out:" in err and target in err
    (tmp_path / "f").write_text("keep")
    code, _, err = run(capsys, "generate", "tiny", "--out", str(tmp_path / "f"))
    assert code == 2 and "not a directory" in err and (tmp_path / "f").read_text() == "keep"


def test_info(tiny_h5, capsys, tmp_path):
    code, out, _ = run(capsys, "info", str(tiny_h5))
    assert code == 0 and "complete" in out and "test: 16 of 16" in out
    assert SPEC.fingerprint[:12] in out and "FFT" in out
    code, out, _ = run(capsys, "info", "golkar2018")
    assert code == 0 and "1024x1024" in out and "approximate" in out
    code, out, _ = run(capsys, "info", str(tiny_h5), "--json")
    assert json.loads(out)["name"] == "tiny"
    code, _, err = run(capsys, "info", str(tmp_path / "nothing.h5"))
    assert code == 2 and "neither a preset" in err


def test_verify_ok_and_corrupted(tiny_h5, tmp_path, capsys):
    code, out, _ = run(capsys, "verify", str(tiny_h5), "--samples", "-1", "--no-progress")
    assert code == 0 and out.strip().endswith("OK") and "regenerated 32" in out
    bad = tmp_path / "bad.h5"
    bad.write_bytes(tiny_h5.read_bytes())
    with h5py.File(bad, "r") as f:
        info = f["train"]["images"].id.get_chunk_info(9)
    with open(bad, "r+b") as fh:
        fh.seek(info.byte_offset + 100)
        fh.write(b"\x00\x01\x02\x03garbage!")
    code, out, err = run(capsys, "verify", str(bad), "--no-progress")
    assert code == 1 and "split 'train', index 9" in err and "FAILED" in err
    code, _, err = run(capsys, "verify", str(tmp_path / "missing.h5"))
    assert code == 2 and "does not exist" in err


def test_preview(tiny_h5, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    code, out, _ = run(capsys, "preview", str(tiny_h5), "--out", str(tmp_path / "g.png"),
                       "--per-class", "3")
    assert code == 0 and (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    from gptextures.io.preview import class_examples

    img = imread(tmp_path / "g.png")
    assert img.shape[0] > img.shape[1] * 0.8  # 4 rows (classes) x 3 columns
    _, _, grid = class_examples("tiny", "train", 3)
    assert grid.shape == (4, 3, 64, 64)
    assert grid[2, 1].tobytes() == SPEC.sample("train", 1 * 4 + 2).image.tobytes()
    code, _, err = run(capsys, "preview", "tiny", "--out", str(tmp_path / "g.txt"))
    assert code == 2 and "out:" in err


def test_merge_command(tmp_path, tiny_h5, capsys):
    for i in range(2):
        assert main(["generate", "tiny", "--out", str(tmp_path), "--shard", f"{i}/2",
                     "--no-progress"]) == 0
    shards = sorted(str(p) for p in tmp_path.glob("tiny.shard-*.h5"))
    assert len(shards) == 2
    code, out, err = run(capsys, "merge", *shards, "--out", str(tmp_path / "m.h5"),
                         "--no-progress")
    assert code == 0, err
    assert_same_file(tmp_path / "m.h5", tiny_h5)
    code, _, err = run(capsys, "merge", shards[0], "--out", str(tmp_path / "m2.h5"))
    assert code == 2 and "missing shard" in err


def _written(partial):
    try:
        with h5py.File(partial, "r", locking=False) as f:
            return sum(int(f[s].attrs["written"]) for s in f if isinstance(f[s], h5py.Group))
    except Exception:  # noqa: BLE001 - the writer may be mid-flush
        return 0


def test_killed_run_resumes_byte_identical(tmp_path):
    """SIGKILL a real `gptextures generate` mid-run, rerun it: same bytes as one clean run."""
    from gptextures import DatasetSpec

    spec = DatasetSpec.from_dict({**SPEC.to_dict(), "name": "killme",
                                  "splits": {"train": 40, "test": 10}})
    (tmp_path / "spec.json").write_text(spec.to_json())
    out = tmp_path / "out"
    argv = [str(tmp_path / "spec.json"), "--out", str(out), "--no-progress"]
    env = {**_slow_env(tmp_path, "gptextures.io.blocks", "render_block", 0.3),
           "PYTHONUNBUFFERED": "1"}
    child = subprocess.Popen(_gptextures("generate", *argv), env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    partial = h5io.partial_path(out / "killme.h5")
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and child.poll() is None:
            if partial.exists() and _written(partial) >= 40:
                break
            time.sleep(0.02)
        assert child.poll() is None, "the run ended before it could be killed"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not (out / "killme.h5").exists() and partial.exists()  # never looks complete
    with h5io.HDF5Dataset(partial, allow_incomplete=True) as ds:
        done = sum(ds.written(s) for s in ds.splits)
    assert 0 < done < 200
    res = subprocess.run(_gptextures("generate", *argv), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "resumed" in res.stdout
    clean = tmp_path / "clean"
    assert main(["generate", str(tmp_path / "spec.json"), "--out", str(clean),
                 "--no-progress"]) == 0
    assert_same_file(out / "killme.h5", clean / "killme.h5")
    assert h5io.verify(out / "killme.h5", samples=4).ok


def test_output_piped_into_a_closed_reader_is_not_an_error():
    # `gptextures info X | head -1`: the reader is gone before we write; unbuffered output
    # makes the write fail inside the command, as it does for long output.
    import os
    import subprocess
    import sys

    r, w = os.pipe()
    os.close(r)
    try:
        proc = subprocess.run(
            [sys.executable, "-u", "-m", "gptextures", "info", "golkar2018"],
            stdout=w, stderr=subprocess.PIPE, text=True, check=False,
        )
    finally:
        os.close(w)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


# ---- two runs, signals, workers that outlive their parent --------------------------------
_SLOW_SITE = """
import os
if os.environ.get("GPTEXTURES_TEST_SLOW"):
    import functools, importlib, time
    module, name, delay = os.environ["GPTEXTURES_TEST_SLOW"].split(":")
    m = importlib.import_module(module)
    real = getattr(m, name)

    @functools.wraps(real)
    def slow(*a, **k):
        time.sleep(float(delay))
        return real(*a, **k)

    setattr(m, name, slow)
if os.environ.get("GPTEXTURES_TEST_NO_POOL"):  # worker threads only, never worker processes
    import gptextures.generation
    gptextures.generation.POOL_START_S = float("inf")
"""


def _slow_env(tmp_path, module: str, name: str, delay: float) -> dict[str, str]:
    """An environment in which every Python process (worker processes too) makes
    ``module.name`` sleep ``delay`` s per call (a sitecustomize module on PYTHONPATH)."""
    site = tmp_path / "slow-site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_SLOW_SITE)
    path = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**os.environ, "PYTHONPATH": path, "GPTEXTURES_TEST_SLOW": f"{module}:{name}:{delay}"}


def _gptextures(*argv: str) -> list[str]:
    return [sys.executable, "-m", "gptextures", *argv]


def _descendants(pid: int) -> set[int]:
    """PIDs of every living process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                    alive.add(p)
        except OSError:
            pass
    return alive


def _wait_for(cond, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _spec_file(tmp_path, name: str, train: int) -> str:
    from gptextures import DatasetSpec

    spec = DatasetSpec.from_dict({**SPEC.to_dict(), "name": name,
                                  "splits": {"train": train, "test": 4}})
    path = tmp_path / f"{name}.json"
    path.write_text(spec.to_json())
    return str(path)


@pytest.mark.parametrize("fmt", ["hdf5", "hf"])
def test_a_second_run_on_the_same_output_refuses_and_loses_nothing(tmp_path, capsys, fmt):
    """Two `generate` runs into one --out: the second refuses at once naming the first's PID,
    touches nothing, and the first finishes a correct dataset."""
    spec_json = _spec_file(tmp_path, "twice", 40)
    out = tmp_path / "out"
    argv = ["generate", spec_json, "--out", str(out), "--format", fmt, "--no-progress"]
    if fmt == "hf":
        argv += ["--rows-per-file", "20"]
        env = _slow_env(tmp_path, "gptextures.io.hf", "write_file", 0.4)
        partial = out / "twice-hf.partial"
    else:
        env = _slow_env(tmp_path, "gptextures.io.blocks", "render_block", 0.4)
        partial = out / "twice.h5.partial"
    child = subprocess.Popen(_gptextures(*argv), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(partial.exists, what="the first run's partial output")
        before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        code, _, err = run(capsys, *argv)
        assert code == 2
        assert "is being written by another run" in err and f"PID {child.pid}" in err, err
        assert partial.exists()
        after = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        assert set(before) <= set(after)  # nothing of the first run's was deleted
        assert child.wait(timeout=120) == 0, child.stderr.read()
    finally:
        if child.poll() is None:
            child.kill()
    final = out / ("twice.h5" if fmt == "hdf5" else "twice-hf")
    code, stdout, err = run(capsys, "verify", str(final), "--samples", "4", "--no-progress")
    assert code == 0, err
    assert not (out / (final.name + ".lock")).exists()  # released at the end
    code, _, err = run(capsys, *argv)  # a later run sees a complete dataset, as it should
    assert code == 2 and "already exists (a complete" in err


def _rerun_resumes_exactly(tmp_path, argv: list[str], spec_json: str, final) -> None:
    """The same command, rerun, resumes the partial output into the bytes of a clean run."""
    res = subprocess.run(_gptextures(*argv), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "resumed" in res.stdout, res.stderr
    clean = tmp_path / "clean"
    assert main(["generate", spec_json, "--out", str(clean), "--no-progress"]) == 0
    assert_same_file(final, clean / final.name)


def test_sigterm_stops_workers_and_the_run_resumes(tmp_path):
    """SIGTERM (what batch schedulers send) to a `generate --workers 2`: the workers are
    stopped, the exit code is 143, the .partial is left and a rerun resumes it exactly."""
    # 32 blocks of 64 images at 0.5 s per block: ~8 s for 2 threads, enough for the run to
    # start its worker processes (the first blocks are rendered by threads while they start)
    spec_json = _spec_file(tmp_path, "term", 2000)
    out = tmp_path / "out"
    argv = ["generate", spec_json, "--out", str(out), "--workers", "2", "--no-progress"]
    env = _slow_env(tmp_path, "gptextures.io.blocks", "render_block", 0.5)
    child = subprocess.Popen(_gptextures(*argv), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    partial = out / "term.h5.partial"
    try:
        _wait_for(lambda: _written(partial) >= 8 and len(_descendants(child.pid)) >= 4,
                  what="workers running and a few written blocks")
        family = _descendants(child.pid)  # forkserver, 2 workers, the resource tracker
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 143
    finally:
        if child.poll() is None:
            child.kill()
    assert "interrupted (SIGTERM)" in child.stderr.read()
    _wait_for(lambda: not _alive(family), timeout=10, what="the workers to exit")
    assert partial.exists() and not (out / "term.h5").exists()
    assert sorted(p.name for p in out.iterdir()) == ["term.h5.partial"]  # no scratch, no lock
    _rerun_resumes_exactly(tmp_path, argv, spec_json, out / "term.h5")


def test_sigterm_with_worker_threads_exits_143_and_resumes(tmp_path):
    """SIGTERM to a `generate --workers 2` that runs on threads (too little work for worker
    processes): the threads finish their block, the exit code is 143, only the .partial is
    left and a rerun resumes it exactly."""
    spec_json = _spec_file(tmp_path, "threads", 64)  # 8 blocks of 9 images at 0.5 s: ~2 s
    out = tmp_path / "out"
    argv = ["generate", spec_json, "--out", str(out), "--workers", "2", "--no-progress"]
    # (sleeping threads look like threads held back by the GIL: a slow machine could find
    # that worker processes pay, so this run is kept to threads)
    env = {**_slow_env(tmp_path, "gptextures.io.blocks", "render_block", 0.5),
           "GPTEXTURES_TEST_NO_POOL": "1"}
    child = subprocess.Popen(_gptextures(*argv), env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    partial = out / "threads.h5.partial"
    try:
        _wait_for(lambda: _written(partial) >= 9, what="a written block")
        assert not _descendants(child.pid)  # threads, no worker processes
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=30) == 143
    finally:
        if child.poll() is None:
            child.kill()
    assert "interrupted (SIGTERM)" in child.stderr.read()
    assert sorted(p.name for p in out.iterdir()) == ["threads.h5.partial"]  # no lock left
    _rerun_resumes_exactly(tmp_path, argv, spec_json, out / "threads.h5")


@pytest.mark.parametrize("sig", ["SIGHUP", "SIGKILL"])
def test_workers_exit_when_their_parent_is_gone(tmp_path, sig):
    """SIGHUP stops a run like SIGTERM (exit code 129); after SIGKILL of the parent (no
    clean-up possible) its workers notice and exit by themselves."""
    spec_json = _spec_file(tmp_path, "orphans", 2000)  # ~8 s of slowed blocks: a pool starts
    out = tmp_path / "out"
    env = _slow_env(tmp_path, "gptextures.io.blocks", "render_block", 0.5)
    child = subprocess.Popen(
        _gptextures("generate", spec_json, "--out", str(out), "--workers", "2", "--no-progress"),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: _written(out / "orphans.h5.partial") >= 4
                  and len(_descendants(child.pid)) >= 4, what="workers and written blocks")
        family = _descendants(child.pid)
        child.send_signal(getattr(signal, sig))
        code = child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    assert code == (129 if sig == "SIGHUP" else -signal.SIGKILL)
    _wait_for(lambda: not _alive(family), timeout=10, what="the workers to exit")
    left = sorted(p.name for p in out.iterdir())
    if sig == "SIGHUP":  # stopped cleanly: only the partial file
        assert left == ["orphans.h5.partial"]
    else:  # killed: the scratch file of the workers' blocks may be left; the next run removes it
        assert set(left) <= {"orphans.h5.partial", "orphans.h5.partial.blocks", "orphans.h5.lock"}
        assert main(["generate", spec_json, "--out", str(out), "--workers", "2",
                     "--no-progress"]) == 0
        assert sorted(p.name for p in out.iterdir()) == ["orphans.h5"]


# ---- errors at the command line are one line ---------------------------------------------
def test_a_full_disk_is_one_line_and_the_run_resumes(tmp_path):
    """The file size limit (`ulimit -f`) stands in for a full disk: one `error:` line naming
    the output, the partial file kept, and the same command resumes it."""
    import resource

    spec_json = _spec_file(tmp_path, "full", 64)  # 272 images of 16 KiB: ~4.3 MiB
    out = tmp_path / "out"
    argv = _gptextures("generate", spec_json, "--out", str(out), "--no-progress")
    limit = 2 * 2**20

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    res = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                         preexec_fn=small_files)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("gptextures generate: error: out: cannot write")
    assert "full.h5" in lines[0] and "File too large" in lines[0]
    assert "rerun the same command" in lines[0]
    assert (out / "full.h5.partial").exists() and not (out / "full.h5").exists()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "resumed" in res.stdout, res.stderr
    assert main(["verify", str(out / "full.h5"), "--samples", "4", "--no-progress"]) == 0


def test_absurd_inputs_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    code, _, err = run(capsys, "generate", str(tmp_path / "deep.json"), "--out", str(tmp_path))
    assert code == 2 and err.count("\n") == 1 and "nested too deeply" in err
    huge = {**SPEC.to_dict(), "splits": {"train": 10**15}}
    (tmp_path / "huge.json").write_text(json.dumps(huge))
    code, _, err = run(capsys, "generate", str(tmp_path / "huge.json"), "--out",
                       str(tmp_path / "o"), "--no-progress")
    assert code == 2 and err.count("\n") == 1, err
    assert "4000000000000000 images" in err and "PiB on disk" in err and "free" in err
    assert not any((tmp_path / "o").iterdir())
    (tmp_path / "dir.json").mkdir()
    code, _, err = run(capsys, "generate", str(tmp_path / "dir.json"), "--out", str(tmp_path))
    assert code == 2 and "is a directory; expected a spec .json file" in err
    code, _, err = run(capsys, "verify", str(tmp_path))
    assert code == 2 and "is a folder but not a gptextures dataset" in err
    code, _, err = run(capsys, "evaluate", "--dataset", "tiny", "--predictions", str(tmp_path))
    assert code == 2 and "is a directory" in err


def test_huge_worker_counts_are_capped(tmp_path, capsys):
    """--workers far beyond the work (once an OverflowError) runs one worker per Parquet
    file, warning when that is more than the CPUs; the summary says how they ran."""
    from gptextures import generation

    code, out, err = run(capsys, "generate", "tiny", "--out", str(tmp_path / "a"), "--format",
                         "hf", "--rows-per-file", "8", "--workers", str(10**20), "--no-progress")
    assert code == 0, err
    assert "4 threads" in out  # 4 files; too little work to start worker processes
    assert ("more workers than CPUs" in err) == (generation.cpu_count() < 4)
    assert main(["verify", str(tmp_path / "a" / "tiny-hf"), "--samples", "2",
                 "--no-progress"]) == 0


def test_an_unreachable_scheduler_is_named(tmp_path, capsys):
    pytest.importorskip("dask.distributed")
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    code, _, err = run(capsys, "generate", "tiny", "--out", str(tmp_path), "--scheduler",
                       address, "--no-progress")
    assert code == 2 and err.count("\n") == 1
    assert f"cannot reach a Dask scheduler at '{address}' within 5 s" in err
    assert not list(tmp_path.glob("*.partial"))
