"""End to end on a CPU in seconds: data -> a backdrop CNN -> per-scale scores.

    python examples/train_backdrop.py                      # tiny preset, generated in memory
    python examples/train_backdrop.py --dataset data/golkar2018-mini.h5 --epochs 200 --stages 5

Trains the paper's GP network (Table 1, fewer stages for small images) with a small-patch and a
large-patch backdrop mask on the training split, then scores the test split per scale with the
Evaluator. This is an example, not a tuned baseline: use it to see the pieces fit together.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import gptextures as gt
from backdrop.models import GPNet


def train_and_evaluate(dataset: str = "tiny", *, epochs: int = 40, stages: int = 3,
                       width: int = 16, p_small: float = 0.9, p_large: float = 0.5,
                       lr: float = 0.01, seed: int = 0) -> gt.evaluation.EvaluationResult:
    """Train a GPNet with two backdrop masks on ``train`` and evaluate it on ``test``."""
    torch.manual_seed(seed)
    train, test = gt.load(dataset, "train"), gt.load(dataset, "test")
    spec = train.spec
    size = spec.texture.size[0]
    net = GPNet(num_classes=spec.num_classes, width=width, stages=stages, input_size=size,
                small_patch=size / 16, large_patch=size / 4, p_small=p_small, p_large=p_large,
                generator=torch.Generator().manual_seed(seed))
    x = torch.from_numpy(train.images)[:, None]
    y = torch.from_numpy(train.labels)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    net.train()
    for _ in range(epochs):  # full batch: the masks are the only source of stochasticity
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        scores = torch.softmax(net(torch.from_numpy(test.images)[:, None]), dim=1).numpy()
    return gt.Evaluator(spec).evaluate(y_true=test.labels, y_pred=scores.astype(np.float64))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="tiny", help="preset, spec JSON, HDF5 file or HF folder")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--p-small", type=float, default=0.9)
    ap.add_argument("--p-large", type=float, default=0.5)
    args = ap.parse_args()
    result = train_and_evaluate(args.dataset, epochs=args.epochs, stages=args.stages,
                                p_small=args.p_small, p_large=args.p_large)
    print(result.summary())


if __name__ == "__main__":
    main()
