"""FFT backends: the band-limited two-stage inverse FFT equals a full inverse real FFT."""

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
