"""Publishing to the real Hugging Face Hub: skipped unless asked for.

Set ``GPTEXTURES_LIVE_HUB_REPO=OWNER/NAME`` (a dataset repo the token may write; created
private when missing) and ``HF_TOKEN`` to run it. It publishes ``tiny`` under a fresh tag
``live-<unix time>`` and loads it back with ``datasets.load_dataset``; the tags it makes stay
in the repo (tags are immutable versions). It needs the network, so the default test run and
CI never run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = os.environ.get("GPTEXTURES_LIVE_HUB_REPO")
pytestmark = pytest.mark.skipif(
    not REPO or not os.environ.get("HF_TOKEN"),
    reason="live Hub test: set GPTEXTURES_LIVE_HUB_REPO and HF_TOKEN to run it")


def test_publish_and_load_on_the_real_hub(tmp_path: Path) -> None:
    from gptextures import presets
    from gptextures.generation import generate
    from gptextures.io import load

    from .publish_helpers import ROOT

    folder = generate(presets.get("tiny"), tmp_path, formats="hf").paths["hf"]
    tag = f"live-{int(time.time())}"
    env = {k: v for k, v in os.environ.items() if k not in ("HF_ENDPOINT",)}
    env.update(HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0", HF_HOME=str(tmp_path / "home"))
    cmd = [sys.executable, "-m", "gptextures", "publish", str(folder), "--repo", REPO,
           "--tag", tag, "--private", "--no-progress"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert os.environ["HF_TOKEN"] not in r.stdout + r.stderr
    code = ("import json, sys; from datasets import load_dataset; "
            "ds = load_dataset(sys.argv[1], revision=sys.argv[2]); "
            "t = ds['test'].with_format('numpy')[:]; "
            "open(sys.argv[3], 'wb').write(t['image'].tobytes()); "
            "print(json.dumps(ds['test'].features['label'].names))")
    out = tmp_path / "test.bin"
    r = subprocess.run([sys.executable, "-c", code, REPO, tag, str(out)], env=env,
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1]) == presets.get("tiny").class_names
    assert out.read_bytes() == load(folder, "test").images.tobytes()
