"""Blocks handed from worker processes through a mapped scratch file: bytes, bounds, clean-up."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing

import pytest

from gptextures.io.slots import BlockSlots, write_slot


def test_a_worker_process_writes_what_the_parent_reads(tmp_path):
    slots = BlockSlots(tmp_path / "x.blocks", count=3, slot_bytes=64)
    assert (tmp_path / "x.blocks").stat().st_size == 3 * 64  # allocated in full up front
    chunks = [bytes(range(10)), b"abc" * 7, b"\xff" * 30]
    a, b = slots.acquire(), slots.acquire()
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        sizes = pool.submit(write_slot, slots.where(b), chunks).result()
        assert sizes == [10, 21, 30]
        with pytest.raises(ValueError, match="do not fit a slot of 64"):
            pool.submit(write_slot, slots.where(a), [b"x" * 65]).result()
    assert [bytes(v) for v in slots.views(b, sizes)] == chunks
    slots.release(a)
    slots.release(b)
    assert {slots.acquire() for _ in range(3)} == {0, 1, 2}
    slots.close()
    assert not (tmp_path / "x.blocks").exists()


def test_a_leftover_scratch_file_is_replaced(tmp_path):
    (tmp_path / "x.blocks").write_bytes(b"from a killed run")
    slots = BlockSlots(tmp_path / "x.blocks", count=1, slot_bytes=8)
    assert (tmp_path / "x.blocks").stat().st_size == 8
    slots.close()
