"""Make the FFTW wisdom shipped with gptextures (maintainers): ``python -m gptextures.wisdom``.

Wisdom is FFTW's record of which algorithm to use for a transform. ``gptextures.fft`` plans the
presets' transforms from the shipped file (``gptextures/fftw_wisdom.txt``) instead of from
``FFTW_ESTIMATE``'s heuristics: the same algorithm every run, chosen once by timing
(``FFTW_EXHAUSTIVE``, minutes) on the maintainers' machine. Regenerating it changes the bytes
of the images (the backend name records the wisdom's hash), so do it only together with a new
``ALGORITHM_VERSION``.
"""

from __future__ import annotations

import argparse
import time

from . import fft as _fft
from . import presets


def problems() -> list[tuple[tuple[int, int], int]]:
    """``(torus shape, spectrum columns)`` of every preset's ``render`` transform."""
    from .textures import _band_columns, _torus

    out = []
    for name in presets.names():
        tex = presets.get(name).texture
        key = (_torus(tex), _band_columns(tex))
        if key not in out:
            out.append(key)
    return out


def make(planner: str = "FFTW_EXHAUSTIVE") -> bytes:
    """Plan every preset's transforms with ``planner`` in a clean FFTW state; return the wisdom."""
    import pyfftw

    pyfftw.forget_wisdom()
    for shape, ncols in problems():
        t = time.perf_counter()
        _fft._PyfftwPlans(shape, ncols, planner)
        print(f"{shape} x {ncols} columns: planned in {time.perf_counter() - t:.1f} s")
    return pyfftw.export_wisdom()[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--planner", default="FFTW_EXHAUSTIVE",
                    choices=["FFTW_MEASURE", "FFTW_PATIENT", "FFTW_EXHAUSTIVE"])
    args = ap.parse_args(argv)
    data = make(args.planner)
    _fft.WISDOM_PATH.write_bytes(data)
    print(f"wrote {_fft.WISDOM_PATH} ({len(data)} bytes)")


if __name__ == "__main__":
    main()
