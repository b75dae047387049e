"""Helpers for the publishing tests: run folders, datasets, and the CLI against the stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# A recognisable fake token: no output, card, file or error may ever contain it.
SECRET = "hf_SECRETtokenNEVERshow0123456789abcdef"
READ_ONLY = "hf_READonlyTOKEN0123456789abcdefghijk"

# Runs several `gptextures` commands in one process (each with its own environment changes)
# and prints their exit codes and outputs as JSON; faults injected into the stand-in between
# or within those calls are counted, so one subprocess plays a whole scenario.
_DRIVER = r"""
import contextlib, io, json, os, sys
from gptextures.cli import main

results = []
for step in json.loads(sys.argv[1]):
    for k, v in step.get("env", {}).items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(step["argv"])
        except SystemExit as e:
            rc = e.code
    res = {"rc": rc, "out": out.getvalue(), "err": err.getvalue()}
    if "probe" in step:  # read the stand-in's state as any client sees it, between steps
        import urllib.request
        with urllib.request.urlopen(os.environ["HF_ENDPOINT"] + step["probe"]) as r:
            res["probe"] = json.loads(r.read())
    results.append(res)
print("\n@@RESULTS@@" + json.dumps(results))
"""


def hub_env(url: str, home: Path, token: str | None = SECRET) -> dict[str, str]:
    """The environment of a client of the stand-in: no other token source, no Xet, online."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH")}
    env.update(HF_ENDPOINT=url, HF_HUB_DISABLE_XET="1", HF_HOME=str(home),
               HF_HUB_OFFLINE="0", HF_DATASETS_OFFLINE="0", HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_PROGRESS_BARS="1", PYTHONPATH=str(ROOT))
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def run_cli(steps: list[dict[str, Any]], env: dict[str, str], timeout: float = 120
            ) -> tuple[list[dict[str, Any]], str]:
    """Run ``steps`` in one subprocess; returns the per-step results and the whole output.

    A step is ``{"argv": [...], "env": {...}, "probe": "/api/..."}`` (``env`` values of None
    unset a variable; ``probe``, optional, is a GET on the stand-in after the step); a result is
    ``{"rc", "out", "err"}`` plus ``"probe"`` (the JSON answer)."""
    r = subprocess.run([sys.executable, "-c", _DRIVER, json.dumps(steps)], env=env,
                       capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    whole = r.stdout + r.stderr
    if "@@RESULTS@@" not in r.stdout:
        raise AssertionError(f"driver failed (rc {r.returncode}):\n{whole[-4000:]}")
    return json.loads(r.stdout.split("@@RESULTS@@")[1]), whole


def make_run_folder(folder: Path, spec: Any, *, seed: int = 0, wrong: int = 3,
                    weights: str = "safetensors") -> Path:
    """A complete run folder (format version 1) of a small GPNet on ``spec``'s test split.

    The predictions are the true classes with the first ``wrong`` of them shifted by one, so the
    joint accuracy is ``1 - wrong / N``.
    """
    import torch

    from backdrop.models import GPNet
    from gptextures.evaluation import Evaluator, write_submission

    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {"num_classes": spec.num_classes, "width": 4, "stages": 2,
              "input_size": spec.texture.size[0]}
    torch.manual_seed(seed)
    net = GPNet(**kwargs)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    if weights == "safetensors":
        from safetensors.torch import save_file

        save_file(state, str(folder / "model.safetensors"))
    else:
        torch.save(state, folder / "model.pt")
    n = spec.num_samples("test")
    y = np.arange(n) % spec.num_classes
    y[:wrong] = (y[:wrong] + 1) % spec.num_classes
    write_submission(folder / "predictions.json", spec, y, split="test")
    result = Evaluator(spec).evaluate_submission(folder / "predictions.json")
    (folder / "evaluation.json").write_text(json.dumps(result.to_dict()))
    (folder / "dataset.json").write_text(spec.to_json())
    config = {
        "format": "gptextures-run-config", "format_version": 1, "method": "GPNet backdrop",
        "dataset": {"name": spec.name, "version": spec.version, "fingerprint": spec.fingerprint},
        "model": {"class": "backdrop.models.GPNet", "kwargs": kwargs,
                  "params": sum(p.numel() for p in net.parameters())},
        "masks": [{"name": "small", "patch_px": 4.0, "p": 0.9},
                  {"name": "large", "patch_px": 16.0, "p": 0.5}],
        "crop": None,
        "training": {"optimizer": "adam", "lr": 0.001, "weight_decay": 0.0, "steps": 10,
                     "batch_size": 4, "amp": False, "device": "cpu", "efficient": True,
                     "split": "train"},
        "seed": seed,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "loss_curve.csv").write_text("step,loss,elapsed_s\n1,1.38,0.1\n2,1.30,0.2\n")
    run = {"format": "gptextures-run", "format_version": 1, "status": "complete",
           "wall_time_s": 1.5, "hardware": {"device": "cpu", "cpu": "test cpu", "threads": 2},
           "torch_version": torch.__version__, "package_version": "0.1.0",
           "date": "2025-01-02"}
    (folder / "run.json").write_text(json.dumps(run, indent=1))
    return folder


def every_file_text(root: Path) -> str:
    """All bytes under ``root`` (recursively) as one latin-1 string, to search for a token."""
    return "".join(p.read_bytes().decode("latin-1") for p in root.rglob("*") if p.is_file())
