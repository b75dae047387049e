"""The model card of a trained run: ``cards/model_card.md`` filled in, with a ``model-index``.

The YAML front matter is built with ``huggingface_hub.ModelCardData`` so that the Hub (and
``ModelCard.load(...).data.eval_results``) reads the joint and per-level accuracies as
evaluation results on the named dataset repo, split and revision.
"""

from __future__ import annotations

import json
import string
from importlib import resources
from typing import Any

_FILES = {
    "model.safetensors": "the final weights (a state dict, safetensors)",
    "config.json": "the recipe: model class and arguments, backdrop masks, crop, training, seed",
    "run.json": "status, wall time, hardware, versions, date",
    "predictions.json": "the test predictions in the evaluator's submission format",
    "evaluation.json": "the scores of those predictions, with confusion matrices",
    "loss_curve.csv": "training loss per step: `step,loss,elapsed_s`",
    "dataset.json": "the dataset's spec",
}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def eval_results(run: Any, dataset_repo: str, dataset_revision: str) -> list[Any]:
    """``huggingface_hub.EvalResult`` per metric: joint, each level, mean and worst level."""
    from huggingface_hub import EvalResult

    ev = run.evaluation
    spec = run.spec
    common = dict(task_type="image-classification", task_name="Multi-scale texture"
                  " classification", dataset_type=dataset_repo,
                  dataset_name=f"gptextures {spec.name} v{spec.version}", dataset_config="default",
                  dataset_split="test", dataset_revision=dataset_revision)
    out = [EvalResult(metric_type="accuracy", metric_value=ev.accuracy,
                      metric_name="Joint accuracy (all levels)", **common)]
    for lv in spec.texture.levels:
        out.append(EvalResult(metric_type="accuracy", metric_value=ev.level_accuracy[lv.name],
                              metric_name=f"Accuracy, level {lv.name}", **common))
    out.append(EvalResult(metric_type="accuracy", metric_value=ev.mean_level_accuracy,
                          metric_name="Mean level accuracy", **common))
    out.append(EvalResult(metric_type="accuracy", metric_value=ev.worst_level_accuracy,
                          metric_name="Worst level accuracy", **common))
    return out


def _masks(cfg: dict[str, Any]) -> tuple[str, str]:
    masks = [m for m in cfg.get("masks") or [] if float(m.get("p", 0)) > 0]
    if not masks:
        return "none (plain backpropagation)", "no backdrop masking"
    long = "; ".join(f"`{m['name']}`: {m.get('patch_px', '?'):g}-px patches, drop probability"
                     f" p = {m['p']:g}" if isinstance(m.get("patch_px"), (int, float)) else
                     f"`{m['name']}`: p = {m['p']:g}" for m in masks)
    short = "backdrop masks " + ", ".join(f"{m['name']} p={m['p']:g}" for m in masks)
    return long, short


def model_card(run: Any, repo_id: str, dataset_repo: str, dataset_revision: str, *,
               revision: str = "main", endpoint: str = "https://huggingface.co") -> str:
    """The README.md of a model repo for a run (see :func:`gptextures.hub.plan_run`)."""
    from huggingface_hub import ModelCardData

    from .runs import hardware_text

    cfg, info, ev, spec = run.config, run.run, run.evaluation, run.spec
    meta = ModelCardData(
        license="bsd-3-clause", tags=["gptextures", "backdrop", "multi-scale", "pytorch"],
        datasets=[dataset_repo], metrics=["accuracy"], pipeline_tag="image-classification",
        model_name=repo_id.split("/")[1], eval_results=eval_results(run, dataset_repo,
                                                                     dataset_revision))
    rows = [f"| joint accuracy (all levels right) | **{_pct(ev.accuracy)}** |"]
    for lv in spec.texture.levels:
        scales = ", ".join(f"{s:g}" for s in lv.length_scales)
        rows.append(f"| level `{lv.name}` ({scales} px) | {_pct(ev.level_accuracy[lv.name])} |")
    rows.append(f"| mean level accuracy | {_pct(ev.mean_level_accuracy)} |")
    rows.append(f"| worst level (`{ev.worst_level}`) | {_pct(ev.worst_level_accuracy)} |")
    if ev.log_loss is not None:
        rows.append(f"| log-loss (nats) | {ev.log_loss:.3f} |")
    training = "\n".join(f"| {k} | `{json.dumps(v)}` |"
                         for k, v in cfg.get("training", {}).items())
    training += f"\n| model arguments | `{json.dumps(cfg['model'].get('kwargs'))}` |"
    masks_long, masks_short = _masks(cfg)
    crop = cfg.get("crop")
    crop_text = "the whole image (no cropping, no augmentation)" if not crop else (
        f"crops: {crop.get('tiles')} tiles of {crop.get('tile_px')} px"
        + (f" ({crop['eval']})" if crop.get("eval") else ""))
    hw = info.get("hardware") or {}
    hardware = hardware_text(hw) if isinstance(hw, dict) else str(hw)
    files = "\n".join(f"| `{n}` | {d} |" for n, d in _FILES.items()
                      if (run.path / n).is_file() or n == "model.safetensors")
    template = (resources.files("gptextures.cards") / "model_card.md").read_text()
    return string.Template(template).substitute(
        yaml=meta.to_yaml() + "\n", title=f"{cfg['method']} on gptextures {spec.name}",
        model_class=cfg["model"]["class"], params=f"{int(cfg['model']['params']):,}",
        dataset_repo=dataset_repo, dataset_url=f"{endpoint}/datasets/{dataset_repo}",
        dataset_revision=dataset_revision, dataset_name=spec.name,
        dataset_version=spec.version, fingerprint=spec.fingerprint, masks_short=masks_short,
        seed=cfg["seed"], split="test", count=ev.count, results_table="\n".join(rows),
        training_table=training, masks=masks_long, crop=crop_text,
        hardware=hardware or "not recorded", wall_time=f"{float(info['wall_time_s']):.1f} s",
        torch_version=info.get("torch_version"), package_version=info.get("package_version"),
        date=info.get("date"), files_table=files, repo_id=repo_id, revision=revision,
    )
