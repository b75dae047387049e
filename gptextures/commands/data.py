"""Data subcommands: ``presets``, ``generate``, ``info``, ``verify``, ``preview``, ``merge``.

A thin layer: parse arguments, call :mod:`gptextures.generation` / :mod:`gptextures.io`, print.
Errors raised by the library (``ValueError``, ``FileExistsError``, ...) are printed by the
dispatcher as ``gptextures <command>: error: <message>`` with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the data subcommands to the ``gptextures`` parser."""
    p = subparsers.add_parser(
        "presets", help="list the preset datasets (size, depth, classes, samples, disk size)",
        description="List the preset datasets. Disk size is approximate: H*W*4 bytes per image"
                    " plus labels and seeds (HDF5, uncompressed).")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_presets)

    p = subparsers.add_parser(
        "generate", help="write a dataset to HDF5 and/or a Hugging Face folder",
        description="Generate a dataset with a progress bar; an interrupted run resumes where it"
                    " stopped; a complete output is never overwritten unless --overwrite.")
    p.add_argument("source", metavar="PRESET|SPEC.json", help="a preset name or a spec JSON file")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--format", default="hdf5", metavar="FMT[,FMT]",
                   help="hdf5, hf or hdf5,hf (default: hdf5)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="workers (default: 1): threads of this process, joined by worker"
                        " processes on runs long enough to repay their start")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="write only shard I of N (0-based); join shards with `gptextures merge`")
    p.add_argument("--split", action="append", default=None, metavar="SPLIT",
                   help="write only this split (repeatable; default: all)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a complete output (kept until the new one is complete)"
                        " and discard an unfinished one instead of resuming it")
    p.add_argument("--compression", default="none", choices=["none", "gzip", "lzf"],
                   help="HDF5 compression (default: none; smooth float data compresses ~1.2x)")
    p.add_argument("--hf-compression", default="zstd", choices=["zstd", "snappy", "none"],
                   help="Parquet compression (default: zstd)")
    p.add_argument("--rows-per-file", type=int, default=None, metavar="N",
                   help="rows per Parquet file (default: ~256 MiB of images)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on a Dask cluster (e.g. tcp://host:8786); HF output must be on a"
                        " filesystem the Dask workers share")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("info", help="describe a dataset file/folder, a preset or a spec")
    p.add_argument("source", metavar="PATH|PRESET|SPEC.json")
    p.add_argument("--json", action="store_true", help="print the spec JSON only")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser(
        "verify", help="check checksums, counts, fingerprint; regenerate a random sample",
        description="Read every chunk (HDF5 fletcher32 / Parquet page checksums), check counts,"
                    " fingerprint, labels and seeds, and regenerate a random sample of images"
                    " from their seeds comparing bytes. Exit code 1 when a problem is found.")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--samples", type=int, default=8, metavar="K",
                   help="images to regenerate per split (-1: all; default: 8)")
    p.add_argument("--seed", type=int, default=None, help="seed of the random choice of images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_verify)

    p = subparsers.add_parser("preview", help="a PNG grid of samples, one row per class")
    p.add_argument("source", metavar="PRESET|PATH|SPEC.json")
    p.add_argument("--out", required=True, metavar="GRID.png")
    p.add_argument("--split", default=None, help="split to show (default: the first)")
    p.add_argument("--per-class", type=int, default=4, metavar="K",
                   help="images per class (row); default 4")
    p.add_argument("--dpi", type=int, default=100)
    p.add_argument("--scales", action="store_true",
                   help="instead: per class each level's field, the image and a 1:1 crop, for an"
                        " 800-px page (the preview of a published dataset's card)")
    p.set_defaults(func=cmd_preview)

    p = subparsers.add_parser(
        "merge", help="join shards written with --shard I/N into one dataset",
        description="Join complete shards (HDF5 files or HF folders) into one dataset, identical"
                    " to a single-process run.")
    p.add_argument("shards", nargs="+", metavar="SHARD")
    p.add_argument("--out", required=True, metavar="PATH", help="merged .h5 file or HF folder")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_merge)


# ---- helpers ------------------------------------------------------------------------------
def approx_bytes(spec: Any) -> int:
    """Approximate HDF5 size: H*W*4 bytes per image plus 8 bytes per label/level/seed."""
    h, w = spec.texture.size
    n = sum(spec.num_samples(s) for s in spec.splits)
    return n * (h * w * 4 + 8 * (spec.texture.depth + 2))


# ---- handlers -----------------------------------------------------------------------------
def cmd_presets(args: argparse.Namespace) -> int:
    from .. import presets
    from ..io.meta import human_bytes

    rows = []
    for name in presets.names():
        s = presets.get(name)
        rows.append({
            "name": name, "version": s.version, "size": "x".join(map(str, s.texture.size)),
            "depth": s.texture.depth, "classes": s.num_classes,
            "samples": {k: s.num_samples(k) for k in s.splits},
            "approx_bytes": approx_bytes(s), "fingerprint": s.fingerprint,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = f"{'preset':<17}{'version':<9}{'size':<11}{'depth':>5}{'classes':>8}  " \
           f"{'samples':<30}{'disk (approx)':>14}  fingerprint"
    print(head)
    for r in rows:
        samples = ", ".join(f"{k} {v}" for k, v in r["samples"].items())
        print(f"{r['name']:<17}{r['version']:<9}{r['size']:<11}{r['depth']:>5}{r['classes']:>8}  "
              f"{samples:<30}{'~' + human_bytes(r['approx_bytes']):>14}  {r['fingerprint'][:12]}")
    print("disk size ~ H*W*4 bytes per image + labels (uncompressed HDF5); approximate")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from ..generation import generate, parse_shard
    from ..io import resolve_spec
    from ..io.meta import human_bytes
    from ..memory import keep_freed_memory

    keep_freed_memory()  # this process renders and writes images: reuse their buffers

    shard = parse_shard(args.shard)  # bad syntax fails before any work
    spec = resolve_spec(args.source)
    try:
        res = generate(
            spec, args.out, formats=args.format, workers=args.workers, shard=shard,
            splits=args.split, overwrite=args.overwrite,
            compression=None if args.compression == "none" else args.compression,
            hf_compression=args.hf_compression, rows_per_file=args.rows_per_file,
            progress=not args.no_progress, scheduler=args.scheduler,
        )
    except ImportError as exc:  # an optional extra (hf, dask) is missing
        raise ValueError(str(exc)) from None
    print(f"{spec.name} v{spec.version}  fingerprint {res.fingerprint}")
    if shard[1] > 1:
        print(f"  shard {shard[0]}/{shard[1]}")
    for f, p in res.paths.items():
        print(f"  {f}: {p}")
    print("  samples: " + ", ".join(f"{s} {n}" for s, n in res.counts.items()))
    if res.resumed:
        print(f"  resumed: {res.resumed} samples were already written")
    print(f"  generated {res.generated} images in {res.seconds:.2f} s"
          f" ({res.images_per_second:.1f} images/s), {human_bytes(res.bytes)} on disk"
          + (f", {res.executor}" if res.workers > 1 else ""))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from ..io import format_of, resolve_spec
    from ..io.meta import human_bytes

    spec = resolve_spec(args.source)
    if args.json:
        print(spec.to_json())
        return 0
    print(spec.summary())
    p = Path(args.source)
    if p.exists() and p.suffix != ".json":
        for line in format_of(p).describe(p):
            print(line)
    else:
        print(f"approximate size: ~{human_bytes(approx_bytes(spec))} (HDF5, uncompressed)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from ..io import format_of

    rep = format_of(args.path).verify(args.path, samples=args.samples, seed=args.seed,
                                      progress=not args.no_progress)
    for line in rep.summary():
        print(line)
    if rep.ok:
        print("OK")
        return 0
    for msg in rep.problems:
        print(f"  PROBLEM: {msg}", file=sys.stderr)
    print(f"FAILED: {len(rep.problems)} problem(s)", file=sys.stderr)
    return 1


def cmd_preview(args: argparse.Namespace) -> int:
    from ..io.preview import preview_grid
    from ..io.scale_preview import scale_preview

    try:
        if args.scales:
            out = scale_preview(args.source, args.out, split=args.split)
        else:
            out = preview_grid(args.source, args.out, split=args.split,
                               per_class=args.per_class, dpi=args.dpi)
    except ImportError as exc:  # matplotlib (extra 'plot') is missing
        raise ValueError(str(exc)) from None
    print(f"wrote {out}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from ..generation import merge

    out = merge(args.shards, args.out, overwrite=args.overwrite,
                progress=not args.no_progress)
    print(f"merged {len(args.shards)} shard(s) into {out}")
    return 0
