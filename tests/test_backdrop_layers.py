"""Tests for backdrop.layers.Backdrop: train/eval behaviour, inspection, reproducibility."""

import time

import pytest
import torch
from torch import nn

from backdrop import Backdrop, expand_mask, mask_weights

EPS32 = torch.finfo(torch.float32).eps


def test_eval_mode_is_inactive():
    layer = Backdrop(0.9, dims=(-2, -1), lattice=(2, 2), generator=torch.Generator().manual_seed(0))
    layer.eval()
    x = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = layer(x)
    assert y is x
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
    assert layer.kept_cells() is None


def test_train_mode_gradient_follows_kept_cells():
    layer = Backdrop(0.7, dims=(-2, -1), lattice=(3, 3), generator=torch.Generator().manual_seed(1))
    x = torch.randn(4, 2, 9, 6, requires_grad=True)
    y = layer(x)
    assert torch.equal(y, x)
    g = torch.randn_like(x)
    y.backward(g)
    kept = layer.kept_cells()
    assert kept.shape == (4, 3, 3) and kept.dtype == torch.bool
    assert torch.all(kept.sum(dim=(1, 2)) >= 1)
    w = expand_mask(mask_weights(kept, per_sample=True), x.shape, (-2, -1), (3, 3), per_sample=True)
    torch.testing.assert_close(x.grad.double(), (g * w).double(), rtol=2 * EPS32, atol=0.0)
    # kept_map: the cell mask at the input's resolution, (B, 1, H, W); 9x6 in 3x3 cells of 3x2
    km = layer.kept_map()
    assert km.shape == (4, 1, 9, 6) and km.dtype == torch.bool
    assert torch.equal(km, w > 0)
    assert torch.equal(km[:, 0, ::3, ::2], kept)


def test_shared_mask_option():
    layer = Backdrop(
        0.5, dims=(-2, -1), per_sample=False, generator=torch.Generator().manual_seed(4)
    )
    x = torch.randn(3, 2, 4, 4, requires_grad=True)
    layer(x).sum().backward()
    kept = layer.kept_cells()
    assert kept.shape == (4, 4)  # one mask for the whole batch
    scale = 16 / int(kept.sum())
    expected = torch.where(kept, scale, 0.0).expand(3, 2, 4, 4)
    torch.testing.assert_close(x.grad, expected, rtol=EPS32, atol=0.0)
    assert layer.kept_map().shape == (1, 1, 4, 4)


def test_no_mask_under_no_grad_or_p_zero():
    gen = torch.Generator().manual_seed(2)
    state = gen.get_state()
    layer = Backdrop(0.5, dims=(0,), generator=gen)
    x = torch.randn(3, 4, requires_grad=True)
    with torch.no_grad():
        assert layer(x) is x
    assert Backdrop(0.0, dims=(0,), generator=gen)(x) is x
    assert torch.equal(gen.get_state(), state)
    assert layer.kept_cells() is None


def test_layer_has_no_state_and_repr():
    layer = Backdrop(0.25, dims=(-2, -1), lattice=(4, 4), per_sample=True)
    assert layer.state_dict() == {}
    assert list(layer.parameters()) == []
    assert "p=0.25" in repr(layer) and "lattice=(4, 4)" in repr(layer)


def test_seeded_layers_train_identically():
    def train(seed):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.ReLU(),
            Backdrop(
                0.75, dims=(-2, -1), lattice=(4, 4), generator=torch.Generator().manual_seed(seed)
            ),
            nn.Conv2d(4, 2, 3, padding=1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        x, y = torch.randn(6, 1, 8, 8), torch.tensor([0, 1, 0, 1, 1, 0])
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    assert torch.equal(train(5), train(5))
    assert not torch.equal(train(5), train(6))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(p=2.0, dims=(0,)), ValueError, r"p must be in \[0, 1\).*p=2.0"),
        (dict(p=1.0, dims=(0,)), ValueError, r"p must be in \[0, 1\).*p=1.0"),
        (dict(p=None, dims=(0,)), TypeError, "p must be a float"),
        (dict(p=0.5, dims=(0, 1), per_sample=True), ValueError, "must not contain dim 0"),
        (dict(p=0.5, dims=(-2, -1), lattice=(2, 2, 2)), ValueError, "one entry per masked dim"),
        (dict(p=0.5, dims=(-2, -1), lattice=(0, 4)), ValueError, "lattice entries must be ints"),
        (dict(p=0.5, dims=(1, 1)), ValueError, "distinct"),
    ],
)
def test_bad_arguments_at_construction(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        Backdrop(**kwargs)


def test_lattice_too_fine_for_input_is_reported_at_forward():
    layer = Backdrop(0.5, dims=(-2, -1), lattice=(8, 8))
    with pytest.raises(ValueError, match=r"lattice.*in \[1, 4\].*finer than the map.*got 8"):
        layer(torch.randn(1, 1, 4, 4, requires_grad=True))


def test_dims_out_of_range_for_input_is_reported_at_forward():
    layer = Backdrop(0.5, dims=(3,))
    with pytest.raises(ValueError, match=r"dims entry 3 out of range for a 2-d input"):
        layer(torch.randn(2, 5, requires_grad=True))


@pytest.mark.slow  # 24-47 s of inductor compilation on 2 CPU cores
def test_torch_compile_matches_eager():
    """torch.compile (inductor on CPU) around a net with a Backdrop layer: same values/grads."""

    def make():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            Backdrop(
                0.5, dims=(-2, -1), lattice=(2, 2), generator=torch.Generator().manual_seed(3)
            ),
            nn.Flatten(),
        )

    x = torch.randn(2, 1, 4, 4)
    eager = make()
    out_e = eager(x)
    out_e.sum().backward()
    compiled_net = make()
    compiled = torch.compile(compiled_net)
    t0 = time.perf_counter()
    out_c = compiled(x)
    out_c.sum().backward()
    elapsed = time.perf_counter() - t0
    torch.testing.assert_close(out_c, out_e, rtol=4 * EPS32, atol=4 * EPS32)
    assert torch.equal(compiled_net[1].kept_cells(), eager[1].kept_cells())
    for pc, pe in zip(compiled_net.parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(pc.grad, pe.grad, rtol=16 * EPS32, atol=16 * EPS32)
    print(f"torch.compile first call: {elapsed:.1f} s")
