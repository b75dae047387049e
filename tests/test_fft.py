"""FFT backends: the band-limited two-stage inverse FFT equals a full inverse real FFT."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from gptextures import fft, presets, render


@pytest.mark.parametrize("backend", fft.available_backends())
@pytest.mark.parametrize("shape,ncols", [((64, 64), 33), ((64, 96), 10), ((45, 30), 16)])
def test_band_irfft_matches_numpy_full(backend, shape, ncols):
    h, w = shape
    rng = np.random.default_rng(0)
    block = (rng.standard_normal((h, ncols)) + 1j * rng.standard_normal((h, ncols))).astype(
        np.complex64
    )
    full = np.zeros((h, w // 2 + 1), np.complex128)
    full[:, :ncols] = block
    expect = np.fft.irfft2(full, s=shape)
    out = fft.irfft2(block.copy(), shape, backend=backend)
    assert out.dtype == np.float32 and out.shape == shape
    # float32 transforms: error ~ eps32 * log2(n) * |x|
    assert np.abs(out - expect).max() < 1e-5 * np.abs(expect).max() * np.log2(h * w)


def test_backends_agree_on_an_image_and_names_are_recorded():
    spec = presets.get("golkar2018-mini").texture
    images = [render(spec, 1, seed=3, backend=b) for b in fft.available_backends()]
    for x in images[1:]:
        assert np.abs(x - images[0]).max() < 1e-4
    for b in fft.available_backends():
        assert fft.backend_name(b).startswith(b + "-")


def test_backend_selection_and_errors(monkeypatch):
    monkeypatch.setenv("GPTEXTURES_FFT", "numpy")
    assert fft.default_backend() == "numpy"
    monkeypatch.setenv("GPTEXTURES_FFT", "cufft")
    with pytest.raises(ValueError, match="backend: unknown FFT backend 'cufft'"):
        fft.default_backend()
    with pytest.raises(ValueError, match="threads: must be an int >= 1"):
        fft.irfft2(np.zeros((8, 5), np.complex64), (8, 8), threads=0, backend="numpy")
    with pytest.raises(ValueError, match="block: expected shape"):
        fft.irfft2(np.zeros((8, 6), np.complex64), (8, 8), backend="numpy")


@pytest.mark.parametrize("backend", fft.available_backends())
# (200, 1024): the row stage runs in blocks of 64 rows plus a last block of 8, on 2 lanes
@pytest.mark.parametrize("shape,ncols", [((96, 80), 20), ((200, 1024), 40)])
def test_repeated_calls_and_threads_stay_exact(backend, shape, ncols):
    """Plans and buffers are reused between calls: a stale or destroyed buffer would show here."""
    h, w = shape
    rng = np.random.default_rng(1)
    for _ in range(3):
        block = (rng.standard_normal((h, ncols)) + 1j * rng.standard_normal((h, ncols))).astype(
            np.complex64
        )
        full = np.zeros((h, w // 2 + 1), np.complex128)
        full[:, :ncols] = block
        expect = np.fft.irfft2(full, s=shape)
        outs = [fft.irfft2(block.copy(), shape, threads=t, backend=backend) for t in (1, 2, 3)]
        for out in outs:
            assert np.abs(out - expect).max() < 1e-5 * np.abs(expect).max() * np.log2(h * w)
        assert outs[0].tobytes() == outs[1].tobytes() == outs[2].tobytes()


@pytest.mark.skipif("pyfftw" not in fft.available_backends(), reason="needs pyFFTW")
@pytest.mark.parametrize("threads", [1, 2])
def test_row_stage_covers_every_row_once(threads):
    """200 rows are not a whole number of the row stage's blocks (64 at 1024 px): every row
    is transformed once, with 1 or 2 lanes, and the zero columns of the cached row buffers stay
    zero from one call to the next (a wider band, then a narrow one again)."""
    shape = (200, 1024)
    narrow = np.zeros((200, 40), np.complex64)
    narrow[0] = np.arange(1, 41)  # only ky = 0: every row of the image is the same
    expect = np.fft.irfft(np.r_[np.arange(1, 41), np.zeros(473)], n=1024) * 1024
    atol = 1e-5 * np.abs(expect).max() * np.log2(200 * 1024)
    first = fft.irfft2(narrow.copy(), shape, threads=threads, backend="pyfftw", normalise=False)
    np.testing.assert_allclose(first, np.broadcast_to(expect, shape), rtol=0, atol=atol)
    rng = np.random.default_rng(3)
    wide = (rng.standard_normal((200, 300)) + 1j * rng.standard_normal((200, 300)))
    full = np.zeros((200, 513), np.complex128)
    full[:, :300] = wide
    out = fft.irfft2(wide.astype(np.complex64), shape, threads=threads, backend="pyfftw")
    ref = np.fft.irfft2(full, s=shape)
    assert np.abs(out - ref).max() < 1e-5 * np.abs(ref).max() * np.log2(200 * 1024)
    again = fft.irfft2(narrow.copy(), shape, threads=threads, backend="pyfftw", normalise=False)
    assert again.tobytes() == first.tobytes()


def test_spectrum_buffer_is_zeroed_on_every_call():
    buf = fft.spectrum_buffer((64, 64), 12)
    assert buf.shape == (64, 12) and buf.dtype == np.complex64 and not buf.any()
    buf[:] = 1
    assert not fft.spectrum_buffer((64, 64), 12).any()


def test_a_caller_block_does_not_leave_stale_rows_behind():
    """irfft2 of the caller's own array fills the reusable plan input in every row; the next
    spectrum_buffer must clear them all (the silently wrong field of 70a0b2f)."""
    from gptextures import fields

    plan = fields.field_plan("squared_exponential", (64, 64), 4.0)
    ref = fields.draw_field(plan, np.random.default_rng(1), (64, 64))
    fft.irfft2(np.ones((64, plan.rx + 1), np.complex64), (64, 64))
    again = fields.draw_field(plan, np.random.default_rng(1), (64, 64))
    assert again.tobytes() == ref.tobytes()


def _wisdom_probe(env_wisdom: str) -> dict:
    code = (
        "import json, numpy as np; from gptextures import fft, presets, render\n"
        "spec = presets.get('golkar2018-mini').texture\n"
        "x1 = render(spec, 2, seed=11, threads=1); x2 = render(spec, 2, seed=11, threads=2)\n"
        "print(json.dumps({'name': fft.backend_name('pyfftw'), 'id': fft.wisdom_id(),"
        " 'same': x1.tobytes() == x2.tobytes(), 'x': x1[:4, :4].tolist()}))\n"
    )
    env = {**os.environ, "GPTEXTURES_FFT_WISDOM": env_wisdom, "GPTEXTURES_FFT": "pyfftw"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env)
    return json.loads(out.stdout)


@pytest.mark.skipif("pyfftw" not in fft.available_backends(), reason="needs pyFFTW")
def test_wisdom_is_named_deterministic_and_optional():
    on, off = _wisdom_probe("1"), _wisdom_probe("0")
    assert off["id"] is None and off["name"].endswith("/FFTW_ESTIMATE")
    if on["id"] is not None:  # FFTW accepted the shipped wisdom on this CPU
        assert on["name"].endswith(f"/FFTW_ESTIMATE+wisdom-{on['id']}")
    # Either way: bytes independent of the thread count, and both plans compute the same image
    # up to float32 rounding (unit-variance image: ~1e-7 per pixel).
    assert on["same"] and off["same"]
    np.testing.assert_allclose(np.array(on["x"]), np.array(off["x"]), atol=1e-5)


@pytest.mark.skipif(fft.wisdom_id() is None, reason="the shipped FFTW wisdom does not apply here")
def test_shipped_wisdom_covers_every_preset():
    """Fails when a preset's transform changed without `python -m gptextures.wisdom`."""
    from gptextures import wisdom

    for shape, ncols in wisdom.problems():
        fft._PyfftwPlans(shape, ncols, "wisdom")  # raises RuntimeError without wisdom


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_threads_work_in_a_forked_child():
    """The FFT thread pool of the parent does not exist in a forked child: it must not hang."""
    import multiprocessing

    spec = presets.get("golkar2018-mini").texture
    parent = render(spec, 0, seed=4, threads=2)  # starts the parent's pool
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        child = pool.apply_async(_render_two_threads, (spec,)).get(timeout=60)
    assert child == parent.tobytes()


def _render_two_threads(spec) -> bytes:
    return render(spec, 0, seed=4, threads=2).tobytes()
