"""Tests for backdrop.efficient: same latents and the Eq. 2 gradient without the dropped graph."""

import copy

import pytest
import torch
from torch import nn

from backdrop import EfficientBackdrop, apply_mask, efficient_backdrop

# float64 throughout: the efficient and naive paths are algebraically identical, so they may only
# differ by summation order: <= (number of summed terms ~1e3) * eps64 ~ 2e-13 relative.
RTOL64 = 1e-11
MASK = torch.tensor([1, 0, 0, 1, 0, 1, 1, 0, 0, 0], dtype=torch.bool)


def _encoder(batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(4))
    layers += [nn.ReLU(), nn.Conv2d(4, 3, 3, stride=2), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers).double()


def _loss(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A non-decomposable loss: squared distance between the two class means of the latents."""
    return ((z[y == 1].mean(0) - z[y == 0].mean(0)) ** 2).sum() + (z**2).mean()


def _data():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 1, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0, 1, 0])
    return x, y


def _grads(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in module.parameters()]


def test_gradient_equals_naive_masked_gradient_without_cross_sample_layers():
    x, y = _data()
    naive, eff = _encoder(False), _encoder(False)
    z_naive = apply_mask(naive(x), MASK, dims=(0,))
    _loss(z_naive, y).backward()
    z_eff, mask = efficient_backdrop(eff, x, mask=MASK)
    assert torch.equal(mask, MASK)
    torch.testing.assert_close(z_eff, z_naive, rtol=RTOL64, atol=0.0)
    _loss(z_eff, y).backward()
    for ge, gn in zip(_grads(eff), _grads(naive), strict=True):
        torch.testing.assert_close(ge, gn, rtol=RTOL64, atol=1e-15)


def test_input_gradient_only_reaches_kept_samples_with_eq1_scale():
    x, y = _data()
    enc = _encoder(False)
    xr = x.clone().requires_grad_()
    z, _ = efficient_backdrop(enc, xr, mask=MASK)
    _loss(z, y).backward()
    assert torch.all(xr.grad[~MASK] == 0)
    xn = x.clone().requires_grad_()
    _loss(enc(xn), y).backward()
    scale = MASK.numel() / int(MASK.sum())
    torch.testing.assert_close(xr.grad[MASK], xn.grad[MASK] * scale, rtol=RTOL64, atol=1e-15)


def test_batchnorm_full_mode_keeps_forward_and_running_stats_of_a_plain_step():
    x, y = _data()
    plain, eff = _encoder(True), _encoder(True)
    z_plain = plain(x)
    z_eff, _ = efficient_backdrop(eff, x, mask=MASK, batchnorm="full")
    torch.testing.assert_close(z_eff, z_plain, rtol=RTOL64, atol=1e-15)
    bn_p, bn_e = plain[1], eff[1]
    torch.testing.assert_close(bn_e.running_mean, bn_p.running_mean, rtol=RTOL64, atol=1e-15)
    torch.testing.assert_close(bn_e.running_var, bn_p.running_var, rtol=RTOL64, atol=1e-15)
    assert int(bn_e.num_batches_tracked) == int(bn_p.num_batches_tracked) == 1
    assert bn_e.training  # restored


def test_batchnorm_full_mode_gradient_definition():
    """'full' = naive masked gradient of a BatchNorm whose statistics have the full-batch values
    but the gradient of the kept samples' own statistics."""
    x, y = _data()
    ref, eff = _encoder(True), _encoder(True)
    conv, bn, rest = ref[0], ref[1], ref[2:]
    h = conv(x)
    var_k, mean_k = torch.var_mean(h[MASK], dim=(0, 2, 3), correction=0)
    var_f, mean_f = torch.var_mean(h.detach(), dim=(0, 2, 3), correction=0)
    mean = mean_k + (mean_f - mean_k).detach()
    var = var_k + (var_f - var_k).detach()
    c = (1, -1, 1, 1)
    hn = (h - mean.view(c)) / torch.sqrt(var.view(c) + bn.eps) * bn.weight.view(c) + bn.bias.view(c)
    _loss(apply_mask(rest(hn), MASK, dims=(0,)), y).backward()
    z, _ = efficient_backdrop(eff, x, mask=MASK, batchnorm="full")
    _loss(z, y).backward()
    for ge, gr in zip(_grads(eff), _grads(ref), strict=True):
        torch.testing.assert_close(ge, gr, rtol=RTOL64, atol=1e-15)


def test_batchnorm_subset_mode_uses_subset_statistics():
    x, y = _data()
    plain, eff = _encoder(True), _encoder(True)
    z, _ = efficient_backdrop(eff, x, mask=MASK, batchnorm="subset")
    kept_alone = copy.deepcopy(plain)(x[MASK])
    torch.testing.assert_close(z[MASK], kept_alone, rtol=RTOL64, atol=1e-15)
    assert not torch.allclose(z, plain(x))  # values differ from the full-batch forward
    assert int(eff[1].num_batches_tracked) == 2  # running stats updated by both passes


def test_gradient_without_batchnorm_is_independent_of_batchnorm_mode():
    x, y = _data()
    a, b = _encoder(False), _encoder(False)
    _loss(efficient_backdrop(a, x, mask=MASK, batchnorm="full")[0], y).backward()
    _loss(efficient_backdrop(b, x, mask=MASK, batchnorm="subset")[0], y).backward()
    for ga, gb in zip(_grads(a), _grads(b), strict=True):
        assert torch.equal(ga, gb)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_all_kept_is_the_plain_gradient(batchnorm):
    x, y = _data()
    plain, eff = _encoder(batchnorm), _encoder(batchnorm)
    _loss(plain(x), y).backward()
    keep_all = torch.ones(10, dtype=torch.bool)
    _loss(efficient_backdrop(eff, x, mask=keep_all, batchnorm="subset")[0], y).backward()
    for ge, gp in zip(_grads(eff), _grads(plain), strict=True):
        torch.testing.assert_close(ge, gp, rtol=RTOL64, atol=1e-15)


def test_p_zero_and_no_grad_are_plain_forward():
    x, _ = _data()
    enc = _encoder(False)
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    z, mask = efficient_backdrop(enc, x, 0.0, generator=gen)
    assert mask is None and torch.equal(z, enc(x))
    with torch.no_grad():
        z, mask = efficient_backdrop(enc, x, 0.5, generator=gen)
    assert mask is None and torch.equal(z, enc(x))
    assert torch.equal(gen.get_state(), state)


def test_module_wrapper_train_eval_and_reproducibility():
    x, y = _data()

    def step(seed):
        mod = EfficientBackdrop(_encoder(False), 0.6, generator=torch.Generator().manual_seed(seed))
        _loss(mod(x), y).backward()
        return mod.last_mask, _grads(mod)

    m1, g1 = step(3)
    m2, g2 = step(3)
    assert m1.shape == (10,) and m1.any()
    assert torch.equal(m1, m2) and all(torch.equal(a, b) for a, b in zip(g1, g2, strict=True))
    mod = EfficientBackdrop(_encoder(False), 0.6).eval()
    assert torch.equal(mod(x), mod.encoder(x)) and mod.last_mask is None
    assert "p=0.6" in repr(mod)


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(batchnorm="running"), ValueError, "batchnorm must be 'full' or 'subset'"),
        (dict(mask=torch.ones(3, dtype=torch.bool)), ValueError, r"shape \(10,\)"),
        (dict(mask=torch.ones(10)), ValueError, "bool tensor"),
        (dict(mask=torch.zeros(10, dtype=torch.bool)), ValueError, "at least one"),
        (dict(p=1.2), ValueError, r"p must be in \[0, 1\).*p=1.2"),
        (dict(p=1.0), ValueError, r"p must be in \[0, 1\).*p=1.0"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    x, _ = _data()
    with pytest.raises(exc, match=match):
        efficient_backdrop(_encoder(False), x, **kwargs)
