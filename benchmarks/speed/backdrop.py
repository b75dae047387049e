"""Backdrop speed and memory: naive masking vs the compute-saving paths, ratios from one run.

Run: ``python -m benchmarks.speed.backdrop`` runs three sections (``--sections``):

* ``batch``: backdrop over samples (defaults: CNN encoder over 64x64 inputs, batch 256, p in 0.5,
  0.9, 0.99; ``--quick`` for a smoke run);
* ``mini`` and ``paper``: spatial masks in the GP network of Table 1 (``GPNet``), naive masking
  vs ``GPNet(efficient=True)`` (:mod:`backdrop.spatial`), at the mini scale (256 px, width 16,
  5 stages, 4- and 64-px patches) and at the paper's setting (1024 px, width 64, 7 stages, 16-
  and 256-px patches), batch 4, for every mask configuration of the paper's Table 2.

Each section writes its part of benchmarks/results/backdrop_speed.json (the other sections'
results already there are kept, each with its own command, load and date) and the Markdown
rendering backdrop_speed.md.

Batch section, measured in one run with the same weights and data:

* step time (forward + non-decomposable loss + backward, median of ``--repeats``, all methods
  interleaved in one process) of the plain network, of naive backdrop over samples (mask on the
  latents) and of :func:`backdrop.efficient_backdrop` with the same p (default chunked no-grad
  pass, and one unchunked no-grad pass); the same for the encoder with BatchNorm (naive,
  ``batchnorm="full"``, ``batchnorm="subset"``);
* peak memory: peak RSS (``VmHWM``) increase of a fresh process running two steps of each
  method (``--no-memory`` skips these processes);
* saved-activation bytes of the autograd graph (every tensor autograd saves for backward,
  counted once per storage, via ``torch.autograd.graph.saved_tensors_hooks``);
* the overhead of a spatial Backdrop layer inside the encoder;
* for an encoder with BatchNorm in train mode: how far the efficient gradient ("full" and
  "subset" modes) is from the naive masked gradient with the same mask, next to how far two naive
  gradients with different masks are from each other (the noise backdrop itself adds).

Spatial sections, in one run per scale: step times (cross-entropy over the batch, train-mode
BatchNorm as in training) of the plain network, of naive masking and of the efficient path per
configuration, interleaved round-robin; peak RSS of one step in a fresh process; saved
activations; at the mini scale also channels_last and the BatchNorm gradient difference.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

import backdrop.spatial as spatial
from backdrop import (
    Backdrop,
    GPNet,
    apply_mask,
    auc_rank_loss,
    backdrop,
    efficient_backdrop,
    sample_mask,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"


def make_encoder(width: int, latent: int, batchnorm: bool = False, mask: nn.Module | None = None):
    """Three-conv CNN ``(B, 1, S, S) -> (B, latent)``; optional BatchNorm, mask after conv 1."""

    def block(c_in: int, c_out: int) -> list[nn.Module]:
        layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batchnorm)]
        if batchnorm:
            layers.append(nn.BatchNorm2d(c_out))
        return [*layers, nn.ReLU()]

    return nn.Sequential(
        *block(1, width),
        *([mask] if mask is not None else []),
        nn.MaxPool2d(2),
        *block(width, 2 * width),
        nn.MaxPool2d(2),
        *block(2 * width, 2 * width),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, latent),
    )


class Task:
    """A non-decomposable objective: AUC rank loss of a linear score over all latents."""

    def __init__(self, latent: int, batch: int, size: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(batch, 1, size, size, generator=g)
        self.y = torch.zeros(batch, dtype=torch.long)
        self.y[: max(1, batch // 6)] = 1  # 5:1 imbalance as in the paper's AUC experiment
        self.head = nn.Linear(latent, 1)

    def loss(self, z: Tensor) -> Tensor:
        return auc_rank_loss(self.head(z).squeeze(1), self.y, beta=1.0)


def _time(fns: dict[str, Callable[[], None]], repeats: int, warmup: int) -> dict[str, float]:
    """Median seconds per call of each function, calls interleaved round-robin so that drifts in
    machine load affect all methods alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(warmup + repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _saved_bytes(fn: Callable[[], Tensor]) -> int:
    """Bytes of distinct storages saved for backward while building the graph of ``fn()``."""
    seen: dict[int, int] = {}

    def pack(t: Tensor) -> Tensor:
        s = t.untyped_storage()
        seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(seen.values())


def _grad_vector(module: nn.Module) -> Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters()])


def _rel(g: Tensor, ref: Tensor) -> float:
    """Relative L2 distance ``||g - ref|| / ||ref||``."""
    return float((g - ref).norm() / ref.norm())


def _cos(g: Tensor, ref: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(g, ref, dim=0))


# Methods: (name, encoder has BatchNorm, efficient_backdrop keyword arguments or None = naive)
METHODS: list[tuple[str, bool, dict | None]] = [
    ("naive", False, None),
    ("efficient", False, {}),
    ("efficient, one no-grad pass", False, {"chunk_size": None}),
    ("BN: naive", True, None),
    ("BN: efficient 'full'", True, {"batchnorm": "full"}),
    ("BN: efficient 'subset'", True, {"batchnorm": "subset"}),
]


def _step_fn(task: Task, encoder: nn.Module, kw: dict | None, p: float, gen) -> Callable[[], None]:
    """One training step (forward, non-decomposable loss, backward) of a method at ``p``."""
    x = task.x

    def latents() -> Tensor:
        if p == 0.0:
            return encoder(x)
        if kw is None:
            return backdrop(encoder(x), p, dims=(0,), generator=gen)
        return efficient_backdrop(encoder, x, p, generator=gen, **kw)[0]

    def fn() -> None:
        encoder.zero_grad(set_to_none=True)
        task.loss(latents()).backward()

    return fn


def _peak_rss_probe(args, bn: bool, kw: dict | None, p: float) -> float:
    """Peak RSS increase (MiB) over two steps of one method, in a fresh process.

    The child builds the data and encoder, resets its peak-RSS counter (``/proc/self/clear_refs``),
    runs two steps and reports ``VmHWM`` (peak RSS) minus the RSS just before the steps: the most
    memory the step needed at any instant (activations, graph, temporaries, allocator), including
    what autograd frees during the backward. Linux only.
    """
    probe = dict(
        bn=bn, kw=kw, p=p, width=args.width, latent=args.latent, batch=args.batch, size=args.size,
        seed=args.seed, threads=args.threads,
    )  # fmt: skip
    code = f"from benchmarks.speed.backdrop import _probe; _probe({json.dumps(probe)!r})"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _status_mib(field: str) -> float:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _probe(config: str) -> None:
    """Child side of :func:`_peak_rss_probe`: prints the peak RSS increase in MiB."""
    c = json.loads(config)
    if c["threads"]:
        torch.set_num_threads(c["threads"])
    torch.manual_seed(c["seed"])
    task = Task(c["latent"], c["batch"], c["size"], c["seed"])
    encoder = make_encoder(c["width"], c["latent"], batchnorm=c["bn"])
    gen = torch.Generator().manual_seed(c["seed"])
    fn = _step_fn(task, encoder, c["kw"], c["p"], gen)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_mib("VmRSS")
    for _ in range(2):
        fn()
    print(_status_mib("VmHWM") - before)


def bench_speed(args, task: Task) -> dict:
    """Step times, peak RSS and saved-activation bytes of every method at every p."""
    torch.manual_seed(args.seed)
    encoders = {False: make_encoder(args.width, args.latent)}
    torch.manual_seed(args.seed)
    encoders[True] = make_encoder(args.width, args.latent, batchnorm=True)
    gen = torch.Generator().manual_seed(args.seed)
    fns = {
        "plain": _step_fn(task, encoders[False], None, 0.0, gen),
        "BN: plain": _step_fn(task, encoders[True], None, 0.0, gen),
    }
    for p in args.ps:
        for name, bn, kw in METHODS:
            fns[f"{name} {p}"] = _step_fn(task, encoders[bn], kw, p, gen)

    # Forward-only times: the issue's ideal cost is "1 forward + (1 - p) of a backward".
    enc0 = encoders[False]

    def forward() -> None:
        enc0(task.x)

    def forward_no_grad(chunk: int | None) -> Callable[[], None]:
        def fn() -> None:
            with torch.no_grad():
                for part in task.x.split(chunk) if chunk else (task.x,):
                    enc0(part)

        return fn

    forwards = {
        "forward with graph": forward,
        "no-grad forward, one pass": forward_no_grad(None),
        "no-grad forward, chunks of 32": forward_no_grad(32),
    }
    t = _time({**fns, **forwards}, args.repeats, args.warmup)
    forward_times = {name: t.pop(name) for name in forwards}
    fwd = forward_times["forward with graph"]

    x = task.x
    rows = []
    for bn in (False, True):
        prefix = "BN: " if bn else ""
        enc = encoders[bn]
        plain_t = t[prefix + "plain"]
        plain_b = _saved_bytes(lambda enc=enc: task.loss(enc(x)))
        plain_rss = _peak_rss_probe(args, bn, None, 0.0) if args.memory else float("nan")
        rows.append(
            dict(method=prefix + "plain", p=0.0, time_s=plain_t, time_vs_plain=1.0, saved_mb=
                 plain_b / 2**20, peak_rss_mb=plain_rss, kept=args.batch)
        )  # fmt: skip
        for p in args.ps:
            mask = sample_mask((x.shape[0],), p, generator=torch.Generator().manual_seed(7))
            base = {}
            for name, mbn, kw in METHODS:
                if mbn != bn:
                    continue
                if kw is None:
                    b = _saved_bytes(
                        lambda m=mask, enc=enc: task.loss(apply_mask(enc(x), m, dims=(0,)))
                    )
                else:
                    b = _saved_bytes(
                        lambda m=mask, enc=enc, kw=kw: task.loss(
                            efficient_backdrop(enc, x, mask=m, **kw)[0]
                        )
                    )
                rss = _peak_rss_probe(args, bn, kw, p) if args.memory else float("nan")
                tm = t[f"{name} {p}"]
                if kw is None:
                    base = dict(time=tm, saved=b, rss=rss)
                row = dict(
                    method=name,
                    p=p,
                    time_s=tm,
                    time_vs_naive=tm / base["time"],
                    time_vs_plain=tm / plain_t,
                    saved_mb=b / 2**20,
                    saved_vs_naive=b / base["saved"],
                    peak_rss_mb=rss,
                    peak_rss_vs_naive=rss / base["rss"],
                    kept=int(mask.sum()),
                )
                if not bn and kw is not None:
                    # ideal: a forward of every sample plus (1 - p) of the backward
                    row["ideal_vs_plain"] = (fwd + (1 - p) * (plain_t - fwd)) / plain_t
                rows.append(row)
    return dict(rows=rows, forward_with_graph_s=fwd, forward_times_s=forward_times)


def targets(res: dict) -> list[dict]:
    """The issue's targets, checked against the no-BatchNorm rows of this run."""
    rows = {(r["method"], r["p"]): r for r in res["speed"]["rows"]}
    out = []
    for p, key, limit, what in (
        (0.9, "time_vs_naive", 0.45, "step time / naive"),
        (0.9, "saved_vs_naive", 0.5, "saved activations / naive"),
        (0.9, "peak_rss_vs_naive", 0.5, "peak RSS increase / naive"),
        (0.99, "time_vs_naive", 0.4, "step time / naive"),
    ):
        r = rows.get(("efficient", p))
        if r is None:
            continue
        out.append(dict(p=p, what=what, limit=limit, value=r[key], met=bool(r[key] <= limit)))
    return out


def bench_layer_overhead(args, task: Task) -> dict:
    """Spatial Backdrop layer (per-sample 8x8 lattice, p=0.5) after conv 1 vs no layer."""
    torch.manual_seed(args.seed)
    lattice = (min(8, args.size), min(8, args.size))
    layer = Backdrop(0.5, dims=(-2, -1), lattice=lattice, generator=torch.Generator())
    with_mask = make_encoder(args.width, args.latent, mask=layer)
    without = make_encoder(args.width, args.latent, mask=nn.Identity())
    without.load_state_dict(with_mask.state_dict())
    fns = {}
    for name, enc in (("without_layer", without), ("with_layer", with_mask)):

        def fn(enc=enc) -> None:
            enc.zero_grad(set_to_none=True)
            task.loss(enc(task.x)).backward()

        fns[name] = fn
    out = {name + "_time_s": v for name, v in _time(fns, args.repeats, args.warmup).items()}
    out["ratio"] = out["with_layer_time_s"] / out["without_layer_time_s"]
    out["lattice"] = list(lattice)
    return out


def bench_batchnorm(args, task: Task) -> dict:
    """Gradient difference of the efficient path vs the naive masked gradient with BatchNorm."""
    torch.manual_seed(args.seed)
    base = make_encoder(args.width, args.latent, batchnorm=True)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    gen = torch.Generator().manual_seed(args.seed + 1)
    out = {}
    for p in args.ps:
        masks = [sample_mask((task.x.shape[0],), p, generator=gen) for _ in range(2)]
        grads = {}
        times = {}
        for name in ("naive", "naive_other_mask", "full", "subset"):
            base.load_state_dict(state)
            base.zero_grad(set_to_none=True)
            t0 = time.perf_counter()
            if name.startswith("naive"):
                m = masks[1] if name == "naive_other_mask" else masks[0]
                task.loss(apply_mask(base(task.x), m, dims=(0,))).backward()
            else:
                z, _ = efficient_backdrop(base, task.x, mask=masks[0], batchnorm=name)
                task.loss(z).backward()
            times[name] = time.perf_counter() - t0
            grads[name] = _grad_vector(base)
        ref = grads["naive"]
        out[str(p)] = dict(
            rel_diff_full=_rel(grads["full"], ref),
            rel_diff_subset=_rel(grads["subset"], ref),
            rel_diff_other_mask=_rel(grads["naive_other_mask"], ref),
            cos_full=_cos(grads["full"], ref),
            cos_subset=_cos(grads["subset"], ref),
            cos_other_mask=_cos(grads["naive_other_mask"], ref),
            single_step_time_s=times,
        )
    base.load_state_dict(state)
    with torch.no_grad():
        z_plain = base(task.x)
    base.load_state_dict(state)
    z_sub, _ = efficient_backdrop(base, task.x, mask=masks[0], batchnorm="subset")
    out["subset_latent_rel_diff"] = float((z_sub.detach() - z_plain).norm() / z_plain.norm())
    return out


# --- spatial masks: GPNet, naive masking vs the efficient path ------------------------------

SCALES = {
    "mini": dict(input_size=256, width=16, stages=5, small_patch=4, large_patch=64),
    "paper": dict(input_size=1024, width=64, stages=7, small_patch=16, large_patch=256),
}
TABLE2 = [(ps, pl) for ps in (0.0, 0.99, 0.999) for pl in (0.0, 0.75, 0.94)]
HEADLINE = (0.999, 0.94)
SPATIAL_TARGETS = {  # scale -> [(what, key, limit)] at the headline configuration
    "paper": [
        ("step time / naive", "time_vs_naive", 0.4),
        ("peak RSS increase / naive", "peak_rss_vs_naive", 0.25),
        ("saved activations / naive", "saved_vs_naive", 0.25),
    ],
    "mini": [("step time / naive", "time_vs_naive", 0.5)],
}


def gp_setup(
    scale: str,
    p_small: float,
    p_large: float,
    efficient: bool,
    *,
    batch: int,
    seed: int,
    layout: str = "nchw",
    bn_eval: bool = False,
    mask_seed: int | None = None,
) -> tuple[GPNet, Tensor, Tensor]:
    """A GPNet at ``scale`` (same weights for every call with the same seed), its input batch
    ``(batch, 1, S, S)`` and labels; masks from a generator seeded ``mask_seed`` (default
    ``seed + 1``), so naive and efficient models draw the same masks step for step."""
    cfg = SCALES[scale]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1 if mask_seed is None else mask_seed)
    net = GPNet(p_small=p_small, p_large=p_large, generator=gen, efficient=efficient, **cfg)
    size = cfg["input_size"]
    x = torch.randn(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))
    y = torch.arange(batch) % 4
    if layout == "cl":
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if bn_eval:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    return net, x, y


def gp_step(net: GPNet, x: Tensor, y: Tensor, no_grad_channels_last: bool = True) -> None:
    """One training step without the update: cross-entropy over the batch, backward.
    ``no_grad_channels_last=False``: the efficient path's no-grad pass in the model's layout."""
    net.zero_grad(set_to_none=True)
    saved = spatial.NO_GRAD_CHANNELS_LAST
    spatial.NO_GRAD_CHANNELS_LAST = no_grad_channels_last
    try:
        nn.functional.cross_entropy(net(x), y).backward()
    finally:
        spatial.NO_GRAD_CHANNELS_LAST = saved


def _spatial_probe(config: str) -> None:
    """Child side of the spatial peak-RSS probe: prints the peak RSS increase (MiB) of one step
    after ``warmup`` steps (0: the first step; later steps reuse the heap the first one grew, so
    their increase says nothing about their need)."""
    c = json.loads(config)
    if c["threads"]:
        torch.set_num_threads(c["threads"])
    net, x, y = gp_setup(
        c["scale"],
        c["p_small"],
        c["p_large"],
        c["efficient"],
        batch=c["batch"],
        seed=c["seed"],
        layout=c["layout"],
    )
    native = c.get("native_layout", False)
    for _ in range(c["warmup"]):
        gp_step(net, x, y, not native)
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_mib("VmRSS")
    gp_step(net, x, y, not native)
    print(_status_mib("VmHWM") - before)


def _spatial_rss(
    args, scale: str, ps: float, pl: float, efficient: bool, layout: str, native: bool = False
) -> float:
    probe = dict(
        native_layout=native,
        scale=scale,
        p_small=ps,
        p_large=pl,
        efficient=efficient,
        layout=layout,
        batch=args.spatial_batch,
        seed=args.seed,
        threads=args.threads,
        warmup=0,
    )
    code = (
        "from benchmarks.speed.backdrop import _spatial_probe; "
        f"_spatial_probe({json.dumps(probe)!r})"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, check=True, capture_output=True, text=True
    )
    return float(out.stdout.strip().splitlines()[-1])


def _time_with_saved(
    fns: dict[str, Callable[[], None]], repeats: int, warmup: int
) -> tuple[dict[str, float], dict[str, int]]:
    """Median seconds per call (round-robin as :func:`_time`) and, from the first (untimed)
    warm-up call of each function, the bytes of distinct storages autograd saved."""
    saved: dict[str, int] = {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(max(warmup, 1) + repeats):
        for name, fn in fns.items():
            if r == 0:
                seen: dict[int, int] = {}

                def pack(t: Tensor, seen: dict[int, int] = seen) -> Tensor:
                    st = t.untyped_storage()
                    seen[st.data_ptr()] = st.nbytes()
                    return t

                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    fn()
                saved[name] = sum(seen.values())
                continue
            t0 = time.perf_counter()
            fn()
            if r >= max(warmup, 1):
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}, saved


def _kept(net: GPNet) -> dict[str, float]:
    """Kept cells per image of each active mask in the last step."""
    out = {}
    for name, layer in net.mask_layers.items():
        cells = layer.kept_cells()
        if layer.p > 0 and cells is not None:
            out[name] = float(cells.flatten(1).sum(1).float().mean())
    return out


def bench_spatial(args, scale: str) -> dict:
    """Every Table 2 configuration at ``scale``: plain, naive and efficient steps."""
    batch, seed = args.spatial_batch, args.seed
    repeats = args.mini_repeats if scale == "mini" else args.paper_repeats
    naive_every = scale == "mini"  # at 1024 px a naive step costs a minute: headline only
    nets: dict[str, tuple[GPNet, Tensor, Tensor]] = {
        "plain": gp_setup(scale, 0.0, 0.0, False, batch=batch, seed=seed)
    }
    for ps, pl in TABLE2:
        if (ps, pl) != (0.0, 0.0) and (naive_every or (ps, pl) == HEADLINE):
            nets[f"naive {ps} {pl}"] = gp_setup(scale, ps, pl, False, batch=batch, seed=seed)
        nets[f"efficient {ps} {pl}"] = gp_setup(scale, ps, pl, True, batch=batch, seed=seed)
    # paired: the no-grad pass in the model's own layout instead of channels_last
    nets[f"efficient (no-grad pass NCHW) {HEADLINE[0]} {HEADLINE[1]}"] = gp_setup(
        scale, *HEADLINE, True, batch=batch, seed=seed
    )
    layouts = args.mini_layouts if scale == "mini" else []
    for layout in layouts:
        if layout == "nchw":
            continue
        nets[f"{layout}: plain"] = gp_setup(
            scale, 0, 0, False, batch=batch, seed=seed, layout=layout
        )
        for name, eff in (("naive", False), ("efficient", True)):
            nets[f"{layout}: {name} {HEADLINE[0]} {HEADLINE[1]}"] = gp_setup(
                scale, *HEADLINE, eff, batch=batch, seed=seed, layout=layout
            )
    fns = {
        name: (lambda n=n, x=x, y=y, cl="NCHW)" not in name: gp_step(n, x, y, cl))
        for name, (n, x, y) in nets.items()
    }
    load_before = list(os.getloadavg())
    started = time.time()
    times, saved = _time_with_saved(fns, repeats, args.warmup)
    rows = []
    head_naive = f"naive {HEADLINE[0]} {HEADLINE[1]}"
    for name, (net, _, _) in nets.items():
        layout = name.split(":")[0] if ":" in name else "nchw"
        method = name.split(": ")[-1].rsplit(" ", 2)[0]
        ps, pl = (0.0, 0.0) if method == "plain" else tuple(map(float, name.split(" ")[-2:]))
        prefix = "" if layout == "nchw" else f"{layout}: "
        naive_name = f"{prefix}naive {ps} {pl}"
        if naive_name not in nets:
            naive_name = prefix + head_naive
        row = dict(
            layout=layout,
            method=method,
            p_small=ps,
            p_large=pl,
            time_s=times[name],
            saved_mb=saved[name] / 2**20,
            kept=_kept(net),
            plan=[dict(seg) for seg in net.last_plan] if net.efficient else None,
        )
        if args.memory:
            native = "NCHW)" in name
            row["peak_rss_mb"] = _spatial_rss(args, scale, ps, pl, net.efficient, layout, native)
        rows.append((name, naive_name, prefix + "plain", row))
    by_name = {name: row for name, _, _, row in rows}
    out_rows = []
    for _name, naive_name, plain_name, row in rows:
        naive, plain = by_name.get(naive_name), by_name[plain_name]
        if row["method"] != "plain" and naive is not None:
            row["naive_from"] = naive_name
            row["time_vs_naive"] = row["time_s"] / naive["time_s"]
            row["saved_vs_naive"] = row["saved_mb"] / naive["saved_mb"]
            if args.memory:
                row["peak_rss_vs_naive"] = row["peak_rss_mb"] / naive["peak_rss_mb"]
        row["time_vs_plain"] = row["time_s"] / plain["time_s"]
        out_rows.append(row)
    res = dict(
        command="python -m benchmarks.speed.backdrop " + " ".join(args.argv),
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        machine=f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores",
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        config=dict(
            scale=scale,
            batch=batch,
            repeats=repeats,
            warmup=max(args.warmup, 1),
            seed=seed,
            **SCALES[scale],
        ),
        load_average_before=load_before,
        rows=out_rows,
    )
    if scale == "mini":
        res["batchnorm"] = bench_spatial_batchnorm(args, scale)
    res["load_average_after"] = list(os.getloadavg())
    res["wall_s"] = time.time() - started
    res["targets"] = spatial_targets(res, scale)
    return res


def spatial_targets(res: dict, scale: str) -> list[dict]:
    """The issue's targets at ``scale`` (NCHW rows): headline ratios and p = 0 vs plain."""
    rows = {(r["layout"], r["method"], r["p_small"], r["p_large"]): r for r in res["rows"]}
    head = rows.get(("nchw", "efficient", *HEADLINE))
    out = []
    for what, key, limit in SPATIAL_TARGETS[scale]:
        if head is not None and key in head:
            value = head[key]
            out.append(
                dict(
                    config=list(HEADLINE),
                    what=what,
                    limit=limit,
                    value=value,
                    met=bool(value <= limit),
                )
            )
    zero = rows.get(("nchw", "efficient", 0.0, 0.0))
    if zero is not None:
        value = zero["time_vs_plain"]
        out.append(
            dict(
                config=[0.0, 0.0],
                what="step time at p = 0 / plain",
                limit=1.1,
                value=value,
                met=bool(value <= 1.1),
            )
        )
    return out


def bench_spatial_batchnorm(args, scale: str) -> dict:
    """Train-mode BatchNorm: distance of the efficient gradient to the naive masked gradient with
    the same masks, next to two naive gradients with different masks (backdrop's own noise);
    with eval-mode BatchNorm the first is float rounding."""
    out = {}
    for ps, pl in ((0.99, 0.94), (0.999, 0.94), (0.99, 0.0)):
        entry = {}
        for bn_eval in (False, True):
            grads = {}
            for name, eff, mask_seed in (
                ("naive", False, 7),
                ("efficient", True, 7),
                ("naive_other", False, 8),
            ):
                net, x, y = gp_setup(
                    scale,
                    ps,
                    pl,
                    eff,
                    batch=args.spatial_batch,
                    seed=args.seed,
                    bn_eval=bn_eval,
                    mask_seed=mask_seed,
                )
                gp_step(net, x, y)
                grads[name] = _grad_vector(net)
            ref = grads["naive"]
            key = "eval" if bn_eval else "train"
            entry[key] = dict(
                rel_diff_efficient=_rel(grads["efficient"], ref),
                cos_efficient=_cos(grads["efficient"], ref),
                rel_diff_other_mask=_rel(grads["naive_other"], ref),
                cos_other_mask=_cos(grads["naive_other"], ref),
            )
        out[f"{ps} {pl}"] = entry
    return out


def spatial_markdown(res: dict, scale: str) -> str:
    cfg = res["config"]
    lb, la = res["load_average_before"][0], res["load_average_after"][0]
    lines = [
        f"## Spatial masks: GPNet, {scale} scale ({cfg['input_size']} px)",
        "",
        f"Command: `{res['command']}` ({res['date']}, {res['wall_s'] / 60:.0f} min)  ",
        f"Machine: {res['machine']}; torch {res['torch']}, {res['threads']} torch thread(s);"
        f" load average (1 min) {lb:.1f} before, {la:.1f} after"
        + (" (other jobs shared the cores)." if max(lb, la) > 1.5 else ".")
        + "  ",
        f"Network: `GPNet` width {cfg['width']}, {cfg['stages']} stages, small patch"
        f" {cfg['small_patch']} px, large patch {cfg['large_patch']} px, batch {cfg['batch']},"
        " train-mode BatchNorm; step = forward + cross-entropy + backward (no update); times are"
        f" medians of {cfg['repeats']} steps after {cfg['warmup']} warm-up, all rows interleaved"
        " round-robin in one process. Peak RSS: the first step in a fresh process (a later step"
        " reuses the memory the allocator kept), peak minus the RSS before it. Saved"
        " activations: distinct storages autograd saves (first step of each row). 'cropped' ="
        " the fraction of the input the crops below the lowest mask cover (summed over crops),"
        " 'whole' when that segment ran whole instead. 'efficient (no-grad pass NCHW)': the"
        " no-grad pass in the model's layout instead of channels_last (paired measurement of"
        " `backdrop.spatial.NO_GRAD_CHANNELS_LAST`).",
        "",
        "| layout | p_small | p_large | method | kept small / large per image | below the lowest"
        " mask | step time (s) | time / naive | time / plain | peak RSS (MiB) | peak RSS / naive"
        " | saved act. (MiB) | saved / naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        kept = " / ".join(
            f"{r['kept'][k]:.1f}" if k in r["kept"] else "-" for k in ("small", "large")
        )
        if r.get("plan"):
            seg = r["plan"][0]
            below = f"cropped {seg['fraction']:.3f}" if seg["cropped"] else "whole"
        else:
            below = "-"
        naive_note = ""
        if r.get("naive_from") and r["naive_from"].split(" ")[-2:] != [
            str(r["p_small"]),
            str(r["p_large"]),
        ]:
            naive_note = " *"
        lines.append(
            f"| {r['layout']} | {r['p_small']} | {r['p_large']} | {r['method']} | {kept} |"
            f" {below} | {r['time_s']:.3f} | {_fmt(r.get('time_vs_naive', float('nan')), '.2f')}"
            f"{naive_note} | {r['time_vs_plain']:.2f} |"
            f" {_fmt(r.get('peak_rss_mb', float('nan')), '.0f')} |"
            f" {_fmt(r.get('peak_rss_vs_naive', float('nan')), '.2f')} |"
            f" {r['saved_mb']:.1f} | {_fmt(r.get('saved_vs_naive', float('nan')), '.3f')} |"
        )
    if scale == "paper":
        lines += [
            "",
            "\\* against the naive step at the headline configuration (a naive step"
            " costs the same at every configuration: the mask only scales the gradient;"
            " the mini section measures all of them).",
        ]
    lines += ["", f"Targets ({scale} scale, NCHW, efficient vs naive in this run):", ""]
    for tg in res["targets"]:
        lines.append(
            f"* ({tg['config'][0]}, {tg['config'][1]}): {tg['what']} = {tg['value']:.3f}"
            f" (target <= {tg['limit']}): {'met' if tg['met'] else 'NOT met'}"
        )
    bn = res.get("batchnorm")
    if bn:
        lines += [
            "",
            "BatchNorm: relative L2 distance ||g - g_naive|| / ||g_naive|| of the parameter"
            " gradient (cosine in brackets) to naive masking with the same masks, next to a naive"
            " gradient with other masks (backdrop's own noise); train-mode BatchNorm (the"
            " efficient path takes the statistics' gradient from the kept cells' receptive field,"
            " see docs/backdrop.md) and eval-mode BatchNorm (same gradient up to float32"
            " rounding).",
            "",
            "| p_small | p_large | BatchNorm | efficient | naive, other masks |",
            "|---|---|---|---|---|",
        ]
        for key, entry in bn.items():
            ps, pl = key.split(" ")
            for mode, d in entry.items():
                lines.append(
                    f"| {ps} | {pl} | {mode} | {d['rel_diff_efficient']:.2g}"
                    f" ({d['cos_efficient']:.4f}) | {d['rel_diff_other_mask']:.3f}"
                    f" ({d['cos_other_mask']:.3f}) |"
                )
    lines.append("")
    return "\n".join(lines)


def _fmt(v: float, spec: str) -> str:
    return "n/a" if v != v else format(v, spec)  # NaN when the memory probe was skipped


def batch_markdown(res: dict) -> str:
    cfg = res["config"]
    lb, la = res["load_average_before"][0], res["load_average_after"][0]
    lines = [
        "## Backdrop over samples (batch path)",
        "",
        f"Command: `{res['command']}`" + (f" ({res['date']})" if "date" in res else "") + "  ",
        f"Machine: {res['machine']}, {res['cpu_count']} CPU cores; torch {res['torch']},"
        f" {res['threads']} torch thread(s); load average (1 min) {lb:.1f} before,"
        f" {la:.1f} after"
        + (" (other jobs shared the cores)." if max(lb, la) > 1.5 else ".")
        + "  ",
        f"Encoder: 3-conv CNN, width {cfg['width']}, latent {cfg['latent']}, input"
        f" {cfg['size']}x{cfg['size']}, batch {cfg['batch']}; loss: AUC rank loss over the whole"
        f" batch (non-decomposable). 'BN' rows: the same CNN with BatchNorm (train mode) after"
        f" every conv. Step = forward + loss + backward; times are medians of {cfg['repeats']}"
        " steps, all methods interleaved round-robin in one process.",
        "",
        "Memory, two measures: *peak RSS* = peak resident set size (`VmHWM`, reset through"
        " `/proc/self/clear_refs` after setup) of a fresh process running two steps of the method,"
        " minus its RSS just before them (everything the"
        " step holds at its peak: graph, temporaries, allocator); *saved activations* = bytes of"
        " the distinct storages autograd saves for backward"
        " (`torch.autograd.graph.saved_tensors_hooks`): the graph's activation memory."
        " 'issue ideal' = (a forward of all samples + (1 - p) of a backward) / plain step, from"
        " the measured forward-with-graph time; the efficient path can beat it because its"
        " no-grad forward runs in chunks, which is cheaper than a forward that keeps a graph."
        " Forward of all samples (no BatchNorm): "
        + ", ".join(f"{k} {v:.3f} s" for k, v in res["speed"]["forward_times_s"].items())
        + ".",
        "",
        "| method | p | kept | step time (s) | time / naive | time / plain | issue ideal / plain"
        " | peak RSS (MiB) | peak RSS / naive | saved act. (MiB) | saved / naive |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["speed"]["rows"]:
        lines.append(
            f"| {r['method']} | {r['p']} | {r['kept']} | {r['time_s']:.3f} |"
            f" {r.get('time_vs_naive', float('nan')):.2f} | {r['time_vs_plain']:.2f} |"
            f" {_fmt(r.get('ideal_vs_plain', float('nan')), '.2f')} |"
            f" {_fmt(r['peak_rss_mb'], '.0f')} | {_fmt(r.get('peak_rss_vs_naive', 1.0), '.2f')} |"
            f" {r['saved_mb']:.1f} | {r.get('saved_vs_naive', 1.0):.2f} |".replace("nan", "-")
        )
    lines += ["", "Targets (issue 4, no-BatchNorm encoder, efficient vs naive):", ""]
    for tg in res["targets"]:
        lines.append(
            f"* p = {tg['p']}: {tg['what']} = {_fmt(tg['value'], '.2f')} (target <= {tg['limit']}):"
            f" {'met' if tg['met'] else 'NOT met'}"
        )
    lo = res["layer_overhead"]
    lines += [
        "",
        f"Spatial Backdrop layer (per-sample {lo['lattice'][0]}x{lo['lattice'][1]} lattice, p=0.5)"
        f" after conv 1: step {lo['with_layer_time_s']:.3f} s vs {lo['without_layer_time_s']:.3f}"
        f" s without, ratio {lo['ratio']:.3f}.",
        "",
        "BatchNorm (train mode) in the encoder: relative L2 distance ||g - g_naive|| / ||g_naive||"
        " of the parameter gradient to the naive masked gradient with the same mask (cosine in"
        " brackets); 'other mask' is a naive gradient with a second mask draw, i.e. backdrop's own"
        " noise.",
        "",
        "| p | efficient, batchnorm='full' | efficient, batchnorm='subset' | naive, other mask |",
        "|---|---|---|---|",
    ]
    for p in cfg["ps"]:
        b = res["batchnorm"][str(p)]
        lines.append(
            f"| {p} | {b['rel_diff_full']:.3f} ({b['cos_full']:.3f}) | "
            f"{b['rel_diff_subset']:.3f} ({b['cos_subset']:.3f}) | "
            f"{b['rel_diff_other_mask']:.3f} ({b['cos_other_mask']:.3f}) |"
        )
    lines += [
        "",
        f"'subset' latents differ from the full-batch forward by "
        f"{res['batchnorm']['subset_latent_rel_diff']:.3f} (relative L2, last p); 'full' latents"
        " equal it.",
        "",
    ]
    return "\n".join(lines)


def to_markdown(results: dict) -> str:
    """All sections of the results file as one Markdown page."""
    parts = ["# Backdrop speed and memory", ""]
    for scale in ("paper", "mini"):
        if scale in results.get("spatial", {}):
            parts.append(spatial_markdown(results["spatial"][scale], scale))
    if "batch" in results:
        parts.append(batch_markdown(results["batch"]))
    return "\n".join(parts)


def _load_results(path: Path) -> dict:
    """The results file's sections (an older file holding only the batch section is read as
    that section)."""
    if not path.exists():
        return {}
    old = json.loads(path.read_text())
    return {"batch": old} if "speed" in old else old


def run_batch(args) -> dict:
    torch.manual_seed(args.seed)
    task = Task(args.latent, args.batch, args.size, args.seed)
    res = dict(
        command="python -m benchmarks.speed.backdrop " + " ".join(args.argv),
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        machine=f"{platform.machine()} {platform.processor() or ''} {platform.system()}".strip(),
        cpu_count=os.cpu_count(),
        torch=torch.__version__,
        threads=torch.get_num_threads(),
        config=dict(
            batch=args.batch,
            size=args.size,
            width=args.width,
            latent=args.latent,
            ps=args.ps,
            repeats=args.repeats,
            warmup=args.warmup,
            seed=args.seed,
        ),
    )
    res["load_average_before"] = list(os.getloadavg())
    res["speed"] = bench_speed(args, task)
    res["targets"] = targets(res)
    res["layer_overhead"] = bench_layer_overhead(args, task)
    res["batchnorm"] = bench_batchnorm(args, task)
    res["load_average_after"] = list(os.getloadavg())
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--sections",
        type=str,
        default="batch,mini,paper",
        help="comma-separated: batch (over samples), mini and paper (spatial masks in GPNet at"
        " 256 and 1024 px); default all three (the paper section takes ~30-40 min on 2 cores)",
    )
    ap.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    ap.add_argument("--size", type=int, default=64, help="input side in pixels (default 64)")
    ap.add_argument("--width", type=int, default=32, help="conv width (default 32)")
    ap.add_argument("--latent", type=int, default=64, help="latent size (default 64)")
    ap.add_argument("--ps", type=str, default="0.5,0.9,0.99", help="comma-separated drop probs")
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per method (default 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    ap.add_argument("--spatial-batch", type=int, default=4, help="GPNet batch (default 4)")
    ap.add_argument("--mini-repeats", type=int, default=7, help="timed steps, mini (default 7)")
    ap.add_argument(
        "--paper-repeats", type=int, default=2, help="timed steps, paper setting (default 2)"
    )
    ap.add_argument(
        "--mini-layouts",
        type=str,
        default="nchw,cl",
        help="memory formats at the mini scale: nchw and/or cl (channels_last; headline"
        " configuration only); default both",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--quick", action="store_true", help="batch 64, 32x32, 2 repeats")
    ap.add_argument(
        "--no-memory", dest="memory", action="store_false", help="skip the peak-RSS processes"
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    args = ap.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.quick:
        args.batch, args.size, args.repeats = 64, 32, 2
        args.mini_repeats = 2
    args.ps = [float(v) for v in args.ps.split(",")]
    for p in args.ps:
        if not 0 < p < 1:
            ap.error(f"--ps entries must be in (0, 1), got {p}")
    sections = [v.strip() for v in args.sections.split(",") if v.strip()]
    for sec in sections:
        if sec not in ("batch", "mini", "paper"):
            ap.error(f"--sections entries must be batch, mini or paper, got {sec!r}")
    args.mini_layouts = [v.strip() for v in args.mini_layouts.split(",") if v.strip()]
    for lay in args.mini_layouts:
        if lay not in ("nchw", "cl"):
            ap.error(f"--mini-layouts entries must be nchw or cl, got {lay!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    results = _load_results(args.out / "backdrop_speed.json")
    for sec in sections:
        if sec == "batch":
            results["batch"] = run_batch(args)
        else:
            results.setdefault("spatial", {})[sec] = bench_spatial(args, sec)
        args.out.mkdir(parents=True, exist_ok=True)  # written after every section
        (args.out / "backdrop_speed.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "backdrop_speed.md").write_text(to_markdown(results))
    md = to_markdown(results)
    print(md)
    return results


if __name__ == "__main__":
    main()
