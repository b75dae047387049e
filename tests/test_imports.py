"""`import gptextures` stays light: heavy modules load where they are used."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("torch", "dask", "pyarrow", "datasets", "pyfftw", "scipy.special", "scipy.fft", "h5py",
         "matplotlib", "sklearn", "tqdm")


def _loaded_after(code: str) -> list[str]:
    probe = (f"{code}\nimport json, sys\n"
             f"print(json.dumps([m for m in {list(HEAVY)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_gptextures_loads_no_heavy_module():
    assert _loaded_after("import gptextures") == []


def test_the_command_line_parser_and_presets_load_no_heavy_module():
    code = ("from gptextures.cli import build_parser\nbuild_parser()\n"
            "from gptextures import presets\n[presets.get(n).fingerprint for n in presets.names()]")
    assert _loaded_after(code) == []


def test_rendering_loads_the_fft_but_not_the_file_formats():
    loaded = _loaded_after("import gptextures as gt\ngt.render(gt.presets.get('tiny').texture,"
                           " 0, seed=0)")
    assert "h5py" not in loaded and "pyarrow" not in loaded and "torch" not in loaded
