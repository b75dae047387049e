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


def _encoder(batchnorm: bool, **bn_kwargs) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(1, 4, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(4, **bn_kwargs))
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


BN_VARIANTS = [{}, {"momentum": None, "affine": False}]


@pytest.mark.parametrize("bn_kwargs", BN_VARIANTS)
def test_batchnorm_full_mode_keeps_forward_and_running_stats_of_a_plain_step(bn_kwargs):
    x, y = _data()
    plain, eff = _encoder(True, **bn_kwargs), _encoder(True, **bn_kwargs)
    for step in range(2):  # momentum=None: cumulative average over steps
        z_plain = plain(x + step)
        z_eff, _ = efficient_backdrop(eff, x + step, mask=MASK, batchnorm="full")
        torch.testing.assert_close(z_eff, z_plain, rtol=RTOL64, atol=1e-15)
    bn_p, bn_e = plain[1], eff[1]
    torch.testing.assert_close(bn_e.running_mean, bn_p.running_mean, rtol=RTOL64, atol=1e-15)
    torch.testing.assert_close(bn_e.running_var, bn_p.running_var, rtol=RTOL64, atol=1e-15)
    assert int(bn_e.num_batches_tracked) == int(bn_p.num_batches_tracked) == 2
    assert bn_e.training and "forward" not in vars(bn_e)  # restored


@pytest.mark.parametrize("bn_kwargs", BN_VARIANTS)
def test_batchnorm_full_mode_gradient_definition(bn_kwargs):
    """'full' = naive masked gradient of a BatchNorm whose statistics have the full-batch values
    but the gradient of the kept samples' own statistics."""
    x, y = _data()
    ref, eff = _encoder(True, **bn_kwargs), _encoder(True, **bn_kwargs)
    conv, bn, rest = ref[0], ref[1], ref[2:]
    h = conv(x)
    var_k, mean_k = torch.var_mean(h[MASK], dim=(0, 2, 3), correction=0)
    var_f, mean_f = torch.var_mean(h.detach(), dim=(0, 2, 3), correction=0)
    mean = mean_k + (mean_f - mean_k).detach()
    var = var_k + (var_f - var_k).detach()
    c = (1, -1, 1, 1)
    hn = (h - mean.view(c)) / torch.sqrt(var.view(c) + bn.eps)
    if bn.affine:
        hn = hn * bn.weight.view(c) + bn.bias.view(c)
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
        (dict(p=-0.5), ValueError, r"p must be in \[0, 1\).*p=-0.5"),
        (dict(chunk_size=0), ValueError, r"chunk_size must be an int >= 1.*got 0"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    x, _ = _data()
    with pytest.raises(exc, match=match):
        efficient_backdrop(_encoder(False), x, **kwargs)


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 32, "auto"])
def test_chunked_no_grad_pass_gives_the_same_latents_and_gradient(chunk_size):
    x, y = _data()
    ref, eff = _encoder(False), _encoder(False)
    z_ref = apply_mask(ref(x), MASK, dims=(0,))
    _loss(z_ref, y).backward()
    z, _ = efficient_backdrop(eff, x, mask=MASK, chunk_size=chunk_size)
    torch.testing.assert_close(z, z_ref, rtol=RTOL64, atol=1e-15)
    _loss(z, y).backward()
    for ge, gr in zip(_grads(eff), _grads(ref), strict=True):
        torch.testing.assert_close(ge, gr, rtol=RTOL64, atol=1e-15)


def test_bfloat16_autocast_on_cpu():
    """Under CPU autocast the latents keep the autocast dtype and values, and the gradient
    reaches the kept rows only, scaled by B / |b|_1 (compared in bfloat16's precision)."""
    x, _ = _data()
    x = x.float()
    enc = _encoder(False).float()
    g = torch.randn(10, 3, generator=torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_plain = enc(x)
        z, _ = efficient_backdrop(enc, x, mask=MASK)
    assert z.dtype == z_plain.dtype == torch.bfloat16
    # same bf16 ops on the same rows; conv kernels may sum in another order per batch size:
    # allow a few bf16 ulps (eps = 2^-7 relative) of the latents' scale
    eps_bf16 = torch.finfo(torch.bfloat16).eps
    scale_z = float(z_plain.detach().abs().max())
    torch.testing.assert_close(z.float(), z_plain.float(), rtol=0, atol=4 * eps_bf16 * scale_z)
    (gw,) = torch.autograd.grad(z, enc[0].weight, g.to(z.dtype))
    enc_ref = _encoder(False).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_ref = apply_mask(enc_ref(x), MASK, dims=(0,))
    (gw_ref,) = torch.autograd.grad(z_ref, enc_ref[0].weight, g.to(z_ref.dtype))
    # gradients are accumulated in float32 from bf16 products: a few bf16 ulps of their scale
    atol = 8 * eps_bf16 * float(gw_ref.abs().max())
    torch.testing.assert_close(gw, gw_ref, rtol=0, atol=atol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    x, y = _data()
    cpu, gpu = _encoder(False), _encoder(False).cuda()
    _loss(efficient_backdrop(cpu, x, mask=MASK)[0], y).backward()
    z, mask = efficient_backdrop(gpu, x.cuda(), mask=MASK.cuda())
    assert z.device.type == "cuda" and mask.device.type == "cuda"
    _loss(z, y.cuda()).backward()
    for gg, gc in zip(_grads(gpu), _grads(cpu), strict=True):
        torch.testing.assert_close(gg.cpu(), gc, rtol=1e-9, atol=1e-12)
    gen = torch.Generator(device="cuda").manual_seed(0)
    _, m = efficient_backdrop(gpu, x.cuda(), 0.5, generator=gen)
    assert m.device.type == "cuda" and m.any()


def test_batchnorm_full_mode_under_bfloat16_autocast():
    """The patched BatchNorm forwards accept autocast's bfloat16 activations with float32
    parameters: latents as in the plain autocast forward, running stats as in a plain step."""
    x, y = _data()
    x = x.float()
    plain, eff = _encoder(True).float(), _encoder(True).float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z_plain = plain(x)
        z, _ = efficient_backdrop(eff, x, mask=MASK, batchnorm="full")
    assert z.dtype == z_plain.dtype == torch.bfloat16
    eps_bf16 = torch.finfo(torch.bfloat16).eps
    scale_z = float(z_plain.detach().abs().max())
    torch.testing.assert_close(z.float(), z_plain.float(), rtol=0, atol=4 * eps_bf16 * scale_z)
    # statistics of bfloat16 activations: equal up to a few bf16 ulps of their scale
    for name in ("running_mean", "running_var"):
        a, b = getattr(eff[1], name), getattr(plain[1], name)
        torch.testing.assert_close(a, b, rtol=0, atol=4 * eps_bf16 * float(b.abs().max()))
    _loss(z.float(), y).backward()
    assert all(torch.isfinite(p.grad).all() for p in eff.parameters())
