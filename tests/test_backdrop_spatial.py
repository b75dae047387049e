"""Tests for backdrop.spatial: the spatial compute-saving path equals naive masking.

Gradients are compared in float64 against the naive network with the same masks (the same
seeded generator draws them in the same order on both paths). The two computations are
algebraically identical and differ only in summation order: a few hundred terms per sum at
eps64 = 1.1e-16 give relative differences ~1e-13, so 1e-11 (the batch path's RTOL64) leaves
two orders of magnitude and still catches any missing or misplaced term (>= 1e-3 relative).
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from backdrop import (
    Backdrop,
    GPNet,
    PonceNet,
    apply_mask,
    backdrop,
    efficient_backdrop,
    efficient_spatial_backdrop,
)

RTOL64 = 1e-11


def _mask(p, lattice, seed, **kw):
    return Backdrop(
        p,
        dims=kw.pop("dims", (-2, -1)),
        lattice=lattice,
        **kw,
        generator=torch.Generator().manual_seed(seed),
    )


def _one_mask_odd():
    """23x29 input; max-pool straight after a conv (negative values: -inf padding matters)."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3).eval(),
        nn.MaxPool2d(3, 2, 1),  # 12x15
        nn.ReLU(),
        _mask(0.5, (5, 4), 1),  # cells of 2-3 x 3-4 positions, a mask per sample
        nn.Conv2d(3, 4, 3, stride=2),  # 5x7
        nn.LeakyReLU(0.1),
        nn.Conv2d(4, 2, 1),
    )


def _two_masks_exotic():
    """Strided and dilated convs, 'same' padding with an even kernel (asymmetric), average pool
    with padding, ceil-mode max pool with an overhanging last window, a mask joint over samples
    and positions, a shared mask, and two masks sharing a slot; unbounded layers above."""
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, stride=2),  # 21 -> 10
        nn.Tanh(),
        nn.Conv2d(3, 3, 3, dilation=2, padding="same"),
        nn.AvgPool2d(3, 1, 1),
        nn.Conv2d(3, 3, 2, padding="same"),
        nn.MaxPool2d(3, 2, 1, ceil_mode=True),  # 10 -> 6 (last window past the border)
        _mask(0.6, (None, 3, 3), 2, dims=(0, -2, -1)),
        nn.Conv2d(3, 2, 3, padding=1),
        nn.SiLU(),
        _mask(0.5, (2, 3), 3, per_sample=False),
        _mask(0.4, (6, 6), 4),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
    )


def _three_masks():
    """A GP-net-like stack with one mask per stage (31 px input: odd sizes at every stage)."""

    def stage(c_in, c_out):
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]

    return nn.Sequential(
        *stage(1, 3),  # 16
        _mask(0.8, (16, 16), 5),
        *stage(3, 3),  # 8
        _mask(0.5, (3, 3), 6),
        *stage(3, 3),  # 4
        nn.Conv2d(3, 2, 3, padding=1),
        _mask(0.5, (2, 2), 7),
    )


STACKS = {
    "one mask, 23x29": (_one_mask_odd, (3, 1, 23, 29)),
    "two masks, exotic layers": (_two_masks_exotic, (3, 1, 21, 21)),
    "three masks": (_three_masks, (3, 1, 31, 31)),
}


def _build(name):
    make, shape = STACKS[name]
    torch.manual_seed(0)
    body = make().double()
    x = torch.randn(shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    return body, x


def _loss(out):
    """A loss whose gradient is nonzero at every output position."""
    w = torch.randn(out.shape[1:], generator=torch.Generator().manual_seed(3), dtype=out.dtype)
    return (out * w).sum() + (out**2).mean()


def _masks(body):
    return [m.kept_cells() for m in body.modules() if isinstance(m, Backdrop)]


def _assert_grads_equal(a, b, what=""):
    # absolute tolerance on the scale of the whole gradient: some entries are zero in exact
    # arithmetic (the bias of a conv followed by train-mode BatchNorm) and rounding noise there
    # is relative to the terms that cancel, not to the result
    scale = max(float(p.grad.abs().max()) for p in a.parameters())
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(
            pb.grad, pa.grad, rtol=RTOL64, atol=RTOL64 * scale, msg=f"{what} {name}"
        )


@pytest.mark.filterwarnings("ignore:Using padding='same'")  # torch's note on even kernels
@pytest.mark.parametrize("name", list(STACKS))
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(max_crop_fraction=math.inf, tile_size=1),  # one crop per position
        dict(max_crop_fraction=math.inf, tile_size=3),  # tiles clipped by the map's border
        dict(max_crop_fraction=math.inf),  # tile side chosen by area
        dict(max_crop_fraction=0.0),  # whole segments (masks applied as weights)
        dict(),
    ],
)
def test_gradient_equals_naive_masking(name, kwargs):
    naive, x = _build(name)
    eff, _ = _build(name)
    xn, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_n = naive(xn)
    _loss(out_n).backward()
    out_e, plan = efficient_spatial_backdrop(eff, xe, return_plan=True, **kwargs)
    torch.testing.assert_close(out_e, out_n, rtol=RTOL64, atol=RTOL64)  # same forward values
    _loss(out_e).backward()
    for mn, me in zip(_masks(naive), _masks(eff), strict=True):
        assert torch.equal(mn, me)  # same draws, same order
    _assert_grads_equal(naive, eff, name)
    torch.testing.assert_close(
        xe.grad, xn.grad, rtol=RTOL64, atol=RTOL64 * float(xn.grad.abs().max())
    )
    if kwargs.get("max_crop_fraction") == math.inf:
        assert all(seg["cropped"] for seg in plan)
    if kwargs.get("max_crop_fraction") == 0.0:
        assert not any(seg["cropped"] for seg in plan if seg["tiles"])


def test_crops_at_the_border_reproduce_the_padding():
    """Nearly every cell kept, one crop per position: crops at all four borders and corners,
    where zero padding (conv) and -inf padding (max pool) must be reproduced."""
    make = lambda: nn.Sequential(  # noqa: E731
        nn.Conv2d(1, 2, 5, padding=2),
        nn.MaxPool2d(3, 2, 1),  # conv output straight into the pool: negative maxima exist
        _mask(0.05, None, 0),
        nn.Conv2d(2, 1, 3, padding=1),
    )
    torch.manual_seed(1)
    naive = make().double()
    torch.manual_seed(1)
    eff = make().double()
    x = torch.randn(2, 1, 9, 11, dtype=torch.float64) - 2.0  # mostly negative activations
    _loss(naive(x)).backward()
    out, plan = efficient_spatial_backdrop(
        eff, x, max_crop_fraction=math.inf, tile_size=1, return_plan=True
    )
    _loss(out).backward()
    kept = eff[2].kept_cells()
    assert kept[:, 0, :].any() and kept[:, -1, :].any() and kept[:, :, 0].any()
    assert kept[:, :, -1].any() and kept[:, 0, 0].any()
    assert plan[0]["tiles"] == int(kept.sum())
    _assert_grads_equal(naive, eff)
    # the conv's padded border really matters here: a zero-padded pool would differ
    h = naive[0](x)
    assert not torch.equal(
        nn.functional.max_pool2d(h, 3, 2, 1),
        nn.functional.max_pool2d(nn.functional.pad(h, (1, 1, 1, 1)), 3, 2, 0),
    )


def test_gradient_only_through_kept_small_cells_in_the_field_of_kept_large_cells():
    """Two masks: the layers below the small mask get gradient only from kept small cells that
    the kept large cells can see; the others are neither cropped nor differentiated."""
    body = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        _mask(0.3, None, 0),  # 16x16 positions, most kept
        nn.Conv2d(2, 2, 1),
        _mask(0.9, (4, 4), 1),  # 4x4 cells of 4x4 positions, few kept
    ).double()
    x = torch.randn(2, 1, 16, 16, dtype=torch.float64)
    out, plan = efficient_spatial_backdrop(
        body, x, max_crop_fraction=math.inf, tile_size=1, return_plan=True
    )
    large = body[3].kept_map()[:, 0]  # (B, 16, 16): the 1x1 conv's receptive field is itself
    small = body[1].kept_cells()
    assert plan[0]["tiles"] == int((small & large).sum()) < int(small.sum())


def test_forward_values_and_running_stats_with_train_batchnorm():
    """Train-mode BatchNorm: the output equals the plain forward's and the running statistics
    equal those of a plain step (each BatchNorm updated once, also above the top mask)."""

    def make():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            _mask(0.7, (4, 4), 0),
            nn.Conv2d(3, 3, 3, stride=2),
            nn.BatchNorm2d(3, momentum=None),
            _mask(0.5, (2, 2), 1),
            nn.BatchNorm2d(3),  # above the top mask: an ordinary train-mode BatchNorm
        ).double()

    plain, eff = make(), make()
    x = torch.randn(4, 1, 12, 12, dtype=torch.float64)
    for step in range(2):
        with torch.no_grad():
            ref = plain(x + step)
        out = efficient_spatial_backdrop(eff, x + step, max_crop_fraction=math.inf)
        torch.testing.assert_close(out, ref, rtol=RTOL64, atol=RTOL64)
    for i in (1, 5, 7):
        for buf in ("running_mean", "running_var", "num_batches_tracked"):
            torch.testing.assert_close(
                getattr(eff[i], buf), getattr(plain[i], buf), rtol=RTOL64, atol=RTOL64
            )


def test_no_grad_pass_in_chunks_of_samples(monkeypatch):
    """The no-grad pass runs in chunks of samples when maps are large; chunk-wise BatchNorm
    statistics combine to the batch's (values, running statistics and gradients as one chunk)."""
    import backdrop.spatial as spatial

    def make():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.BatchNorm2d(3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(3).eval(),
            _mask(0.7, (3, 3), 0),
            nn.Conv2d(3, 2, 1),
        ).double()

    x = torch.randn(5, 1, 12, 12, dtype=torch.float64)
    runs, chunks = [], []
    batch_stats = spatial._batch_stats

    def spy(bn, maps):
        chunks.append([len(t) for t in maps])
        return batch_stats(bn, maps)

    monkeypatch.setattr(spatial, "_batch_stats", spy)
    for chunk_bytes in (2**40, 1, 3 * 12 * 12 * 8 * 2):  # one chunk, 1 sample, 2 samples
        monkeypatch.setattr(spatial, "_CHUNK_BYTES", chunk_bytes)
        body = make()
        out = efficient_spatial_backdrop(body, x, max_crop_fraction=math.inf)
        _loss(out).backward()
        runs.append((out, body))
    assert chunks == [[5], [1, 1, 1, 1, 1], [2, 2, 1]]
    (out1, body1) = runs[0]
    for out, body in runs[1:]:
        torch.testing.assert_close(out, out1, rtol=RTOL64, atol=RTOL64)
        for buf in ("running_mean", "running_var"):
            torch.testing.assert_close(
                getattr(body[1], buf), getattr(body1[1], buf), rtol=RTOL64, atol=RTOL64
            )
        _assert_grads_equal(body1, body)


def _train_bn_stack(p0=0.9, p1=0.5):
    """Two masks, train-mode BatchNorm below each and above the top one (32 px input: the
    default plan crops the first segment and runs the second whole)."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        _mask(p0, (8, 8), 0),
        nn.Conv2d(3, 3, 3, stride=2),
        nn.BatchNorm2d(3),
        _mask(p1, (2, 2), 1),
        nn.Conv2d(3, 3, 1),
        nn.BatchNorm2d(3),  # above the top mask: an ordinary train-mode BatchNorm
    ).double()


def _bn_data():
    return torch.randn(
        4, 1, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64
    )


def test_train_batchnorm_gradient_is_the_same_whatever_the_crops():
    """Train-mode BatchNorm below the top mask: the statistics' gradient comes from the
    receptive field of the relevant positions, each position once, so one crop per position,
    tiles of any side and a whole segment all give the same gradient."""
    x = _bn_data()
    runs, plans = [], []
    for kwargs in (
        dict(),  # first segment cropped, second whole
        dict(max_crop_fraction=math.inf, tile_size=1),
        dict(max_crop_fraction=math.inf, tile_size=2),
        dict(max_crop_fraction=math.inf, tile_size=8),
    ):
        body = _train_bn_stack()
        out, plan = efficient_spatial_backdrop(body, x, return_plan=True, **kwargs)
        _loss(out).backward()
        runs.append(body)
        plans.append([seg["cropped"] for seg in plan])
    assert plans == [[True, False]] + [[True, True]] * 3
    for body in runs[1:]:
        _assert_grads_equal(runs[0], body)


def test_nothing_to_crop_is_the_naive_step():
    """When no segment would be cropped (max_crop_fraction=0 here; in practice e.g. one kept
    256-px cell, whose receptive field is the whole image), the step is naive masking,
    BatchNorm's statistics' gradient included."""
    x = _bn_data()
    naive, eff = _train_bn_stack(), _train_bn_stack()
    _loss(naive(x)).backward()
    out, plan = efficient_spatial_backdrop(eff, x, max_crop_fraction=0.0, return_plan=True)
    _loss(out).backward()
    assert not any(seg["cropped"] for seg in plan)
    _assert_grads_equal(naive, eff)


def _stand_in_bn(bn, field):
    """Reference BatchNorm: the batch's statistics as values, the gradient of the statistics
    of the positions ``field`` ``(B, 1, H, W)`` (plain autograd ops)."""

    def forward(x):
        var, mean = torch.var_mean(x.detach(), dim=(0, 2, 3), correction=0)
        k = field.sum()
        m_k = (x * field).sum(dim=(0, 2, 3)) / k
        v_k = ((x - m_k.view(1, -1, 1, 1)) ** 2 * field).sum(dim=(0, 2, 3)) / k
        m = (m_k + (mean - m_k).detach()).view(1, -1, 1, 1)
        v = (v_k + (var - v_k).detach()).view(1, -1, 1, 1)
        y = (x - m) / torch.sqrt(v + bn.eps)
        if bn.affine:
            y = y * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
        return y

    return forward


@pytest.mark.parametrize("affine", [True, False])
def test_train_batchnorm_definition_stand_in_statistics(affine):
    """The documented definition, against a hand-built reference: BatchNorm normalizes with the
    whole batch's statistics, and the positions in the receptive field of the kept cells (here
    the kept positions dilated by the 3x3 conv above the BatchNorm, clipped at the border) stand
    in for the map in the statistics' gradient. Naive masking differs (its statistics' gradient
    reaches every position), unless the field covers the whole map."""

    def make():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 3, 3, padding=1),
            nn.BatchNorm2d(3, affine=affine),
            nn.ReLU(),
            nn.Conv2d(3, 2, 3, padding=1),
            _mask(0.9, None, 5),  # one cell per position
            nn.Conv2d(2, 2, 1),
        ).double()

    x = torch.randn(3, 1, 10, 11, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    eff, ref, naive = make(), make(), make()
    _loss(efficient_spatial_backdrop(eff, x, max_crop_fraction=math.inf)).backward()
    kept = eff[4].kept_cells()  # (B, 10, 11), drawn as the naive layer draws it
    field = nn.functional.max_pool2d(kept[:, None].double(), 3, 1, 1)
    assert 0 < float(field.mean()) < 1  # the field covers part of the map
    ref[1].forward = _stand_in_bn(ref[1], field)
    ref[4] = nn.Identity()
    _loss(ref[5](apply_mask(ref[:4](x), kept, dims=(-2, -1)))).backward()
    _assert_grads_equal(ref, eff)
    _loss(naive(x)).backward()
    g_eff = torch.cat([p.grad.flatten() for p in eff.parameters()])
    g_naive = torch.cat([p.grad.flatten() for p in naive.parameters()])
    assert torch.equal(naive[4].kept_cells(), kept)
    assert not torch.allclose(g_eff, g_naive, rtol=1e-3)


def test_train_batchnorm_is_naive_where_the_field_covers_the_map():
    """Every cell kept: the receptive field covers every map below the top mask, and the
    gradient is the naive one, BatchNorm statistics' gradient included (also above the top).
    31 px: the unpadded stride-2 conv reads every position (at 32 px it never reads the last
    row and column, which then do not stand in for the statistics' gradient)."""

    def make():
        body = _train_bn_stack()
        body[3].p, body[6].p = 1e-9, 1e-9  # every cell kept
        return body

    x = _bn_data()[..., :31, :31]
    naive, eff = make(), make()
    _loss(naive(x)).backward()
    _loss(efficient_spatial_backdrop(eff, x, max_crop_fraction=math.inf)).backward()
    assert bool(eff[6].kept_cells().all()) and bool(eff[3].kept_cells().all())
    _assert_grads_equal(naive, eff)


@pytest.mark.parametrize(
    "layer,reason",
    [
        (nn.AdaptiveAvgPool2d(4), "its receptive field is unknown"),
        (nn.Upsample(scale_factor=2), "its receptive field is unknown"),
        (nn.MultiheadAttention(2, 1), "its receptive field is unknown"),
        (nn.Dropout(0.5), "train-mode dropout draws a random mask"),
        (nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), "padding_mode='reflect'"),
        (nn.MaxPool2d(2, return_indices=True), "return_indices=True"),
        (nn.AvgPool2d(3, 2, ceil_mode=True), "ceil_mode=True"),
        (nn.AvgPool2d(3, 1, 1, count_include_pad=False), "count_include_pad=False"),
    ],
)
def test_layers_that_cannot_be_bounded_below_a_mask_are_named(layer, reason):
    body = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), layer, _mask(0.5, (2, 2), 0))
    match = (
        rf"layer '1' \({type(layer).__name__}\) lies below the active backdrop mask '2'.*"
        rf"cannot bound it: {reason}"
    )
    with pytest.raises(ValueError, match=match):
        efficient_spatial_backdrop(body, torch.randn(2, 1, 8, 8))


def test_unbounded_layers_are_fine_above_the_top_mask_or_below_an_inactive_one():
    body = nn.Sequential(
        nn.AdaptiveAvgPool2d(6),  # below an inactive mask only
        _mask(0.0, (2, 2), 0),
        nn.Conv2d(1, 2, 3, padding=1),
        _mask(0.5, (2, 2), 1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    with pytest.raises(ValueError, match="AdaptiveAvgPool2d"):
        efficient_spatial_backdrop(body, torch.randn(2, 1, 8, 8))
    body[0] = nn.Identity()
    assert efficient_spatial_backdrop(body, torch.randn(2, 1, 8, 8)).shape == (2, 2)


def test_other_errors():
    body = nn.Sequential(nn.Conv2d(1, 2, 3), _mask(0.5, None, 0, dims=(1, 2, 3)))
    with pytest.raises(ValueError, match="varies over channels"):
        efficient_spatial_backdrop(body, torch.randn(2, 1, 8, 8))
    body = nn.Sequential(nn.Conv2d(1, 2, 3), _mask(0.5, None, 0), nn.ReLU(inplace=True))
    body.append(_mask(0.5, None, 1))
    with pytest.raises(ValueError, match="modifies the output of backdrop mask '1' in place"):
        efficient_spatial_backdrop(body, torch.randn(2, 1, 8, 8))
    hooked = nn.Conv2d(1, 2, 3)
    hooked.register_forward_pre_hook(lambda m, i: None)
    with pytest.raises(ValueError, match="forward hooks"):
        efficient_spatial_backdrop(
            nn.Sequential(hooked, _mask(0.5, None, 0)), torch.randn(2, 1, 8, 8)
        )
    body = nn.Sequential(nn.Conv2d(1, 2, 3), _mask(0.5, None, 0))
    with pytest.raises(ValueError, match="empty batch"):
        efficient_spatial_backdrop(body, torch.randn(0, 1, 8, 8))
    with pytest.raises(ValueError, match=r"x must be \(B, C, H, W\)"):
        efficient_spatial_backdrop(
            nn.Sequential(nn.Linear(3, 3), _mask(0.5, None, 0, dims=(0,))), torch.randn(4, 3)
        )
    for bad in (dict(tile_size=0), dict(max_crop_fraction=-1.0)):
        with pytest.raises(ValueError, match="tile_size|max_crop_fraction"):
            efficient_spatial_backdrop(body, torch.randn(2, 1, 8, 8), **bad)


def test_no_active_mask_is_the_plain_forward_and_draws_nothing():
    body = nn.Sequential(nn.Conv2d(1, 2, 3), _mask(0.5, None, 0))
    x = torch.randn(2, 1, 8, 8)
    state = body[1].generator.get_state()
    with torch.no_grad():
        assert torch.equal(efficient_spatial_backdrop(body, x), body(x))
    body.eval()
    assert torch.equal(efficient_spatial_backdrop(body, x), body(x))
    body.train().requires_grad_(False)  # nothing below the mask requires grad: no draw
    assert torch.equal(efficient_spatial_backdrop(body, x), body(x))
    assert torch.equal(body[1].generator.get_state(), state)


# --- GPNet ---------------------------------------------------------------------------------


def _gp(efficient, *, seed=0, bn_eval=True, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    args = dict(width=4, stages=4, input_size=64, generator=torch.Generator().manual_seed(seed + 1))
    if "masks" not in kw:
        args.update(small_patch=4, large_patch=32, p_small=0.99, p_large=0.5)
    args.update(kw)
    net = GPNet(efficient=efficient, **args).to(dtype)
    if bn_eval:
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
    return net


def _train(net, x, y, steps=3):
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net


def _data(n=4, size=64, dtype=torch.float64):
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 1, size, size, generator=g, dtype=dtype), torch.arange(n) % 4


def test_gp_net_trains_to_the_same_weights_as_naive_masking():
    """Tiny size (64 px), BatchNorm in eval mode, three SGD steps: same weights (float64)."""
    x, y = _data()
    naive, eff = _train(_gp(False), x, y), _train(_gp(True), x, y)
    assert eff.last_plan[0]["cropped"] and eff.last_plan[0]["fraction"] < 0.5
    assert torch.equal(naive.mask_small.kept_cells(), eff.mask_small.kept_cells())
    for (k, a), b in zip(naive.state_dict().items(), eff.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12, msg=k)


def test_gp_net_channels_last():
    """channels_last models and inputs: crops keep the layout, gradients equal naive masking."""
    x, y = _data()
    x = x.contiguous(memory_format=torch.channels_last)
    naive = _gp(False).to(memory_format=torch.channels_last)
    eff = _gp(True).to(memory_format=torch.channels_last)
    nn.functional.cross_entropy(naive(x), y).backward()
    nn.functional.cross_entropy(eff(x), y).backward()
    assert eff.last_plan[0]["cropped"]
    _assert_grads_equal(naive, eff)


def test_no_grad_pass_runs_channels_last_on_cpu(monkeypatch):
    """The no-grad pass of an NCHW model convolves channels_last maps on CPU (faster, no
    reordered copies; docs/backdrop.md), or the model's layout when switched off; same
    gradients either way."""
    import backdrop.spatial as spatial

    conv2d = nn.functional.conv2d
    seen = []

    def spy(x, *args, **kwargs):
        if not torch.is_grad_enabled() and x.shape[1] > 1:
            seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return conv2d(x, *args, **kwargs)

    monkeypatch.setattr(nn.functional, "conv2d", spy)
    x, y = _data()
    nets = []
    for channels_last in (True, False):
        monkeypatch.setattr(spatial, "NO_GRAD_CHANNELS_LAST", channels_last)
        seen.clear()
        net = _gp(True)
        nn.functional.cross_entropy(net(x), y).backward()
        assert seen and all(s == channels_last for s in seen)
        nets.append(net)
    _assert_grads_equal(*nets)


def test_ponce_net_efficient_equals_naive():
    def make(efficient):
        torch.manual_seed(0)
        net = PonceNet(
            width=4,
            input_size=(60, 80),
            patch_size=(6, 8),
            p=0.9,
            efficient=efficient,
            generator=torch.Generator().manual_seed(1),
        ).double()
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return net

    x = torch.randn(2, 1, 60, 80, dtype=torch.float64)
    naive, eff = make(False), make(True)
    nn.functional.cross_entropy(naive(x), torch.tensor([0, 1])).backward()
    nn.functional.cross_entropy(eff(x), torch.tensor([0, 1])).backward()
    assert eff.last_plan
    _assert_grads_equal(naive, eff)


def test_gp_net_loss_equals_the_plain_network():
    x, y = _data()
    plain = _gp(False, p_small=0.0, p_large=0.0, bn_eval=False)
    eff = _gp(True, bn_eval=False)
    loss_p = nn.functional.cross_entropy(plain(x), y)
    loss_e = nn.functional.cross_entropy(eff(x), y)
    torch.testing.assert_close(loss_e, loss_p, rtol=RTOL64, atol=0.0)


def test_gp_net_state_dict_flag_eval_and_no_grad():
    a, b = _gp(False, bn_eval=False), _gp(True, seed=3, bn_eval=False)
    assert a.state_dict().keys() == b.state_dict().keys()
    b.load_state_dict(a.state_dict())
    a.load_state_dict(b.state_dict())
    x, _ = _data()
    with torch.no_grad():
        assert torch.equal(a(x), b(x))  # train mode, no grad: plain forward on both
    a.eval(), b.eval()
    assert torch.equal(a(x), b(x))
    b.train()
    b(x).sum().backward()
    assert b.last_plan  # the spatial path ran
    b.efficient, b.last_plan = False, []  # a plain attribute, flipped on an existing model
    b(x).sum().backward()
    assert b.last_plan == []
    a.train().efficient = True
    a(x).sum().backward()
    assert a.last_plan


def test_gp_net_seeded_efficient_training_is_deterministic():
    """Train-mode BatchNorm, float32, masks from the seeded generator: same weights twice."""
    x, y = _data(dtype=torch.float32)
    runs = [_train(_gp(True, bn_eval=False, dtype=torch.float32), x, y) for _ in range(2)]
    for a, b in zip(runs[0].state_dict().values(), runs[1].state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_gp_net_p_zero_efficient_is_the_plain_step():
    x, y = _data(dtype=torch.float32)
    plain = _train(_gp(False, p_small=0.0, p_large=0.0, bn_eval=False, dtype=torch.float32), x, y)
    eff = _train(_gp(True, p_small=0.0, p_large=0.0, bn_eval=False, dtype=torch.float32), x, y)
    for a, b in zip(plain.state_dict().values(), eff.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_gp_net_three_masks_and_shared_masks():
    """The depth-3 form (three named masks), shared masks, two masks in one slot."""
    kw = dict(masks=[("fine", 4, 0.9), ("medium", 8, 0.75), ("coarse", 32, 0.5)])
    x, y = _data()
    for per_sample in (True, False):
        naive = _train(_gp(False, per_sample=per_sample, **kw), x, y, steps=1)
        eff = _train(_gp(True, per_sample=per_sample, **kw), x, y, steps=1)
        for (k, a), b in zip(naive.state_dict().items(), eff.state_dict().values(), strict=True):
            torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-12, msg=k)
    kw = dict(masks=[("a", 4, 0.9), ("b", 6, 0.5)])  # both after stage 2
    naive, eff = _gp(False, **kw), _gp(True, **kw)
    assert naive.mask_slots["a"][0] == naive.mask_slots["b"][0] == 2
    body = list(naive.body)
    assert body.index(naive.mask_a) + 1 == body.index(naive.mask_b)  # the given order
    nn.functional.cross_entropy(naive(x), y).backward()
    nn.functional.cross_entropy(eff(x), y).backward()
    _assert_grads_equal(naive, eff)


def test_composes_with_the_batch_path():
    """efficient_backdrop over samples around an efficient GPNet: the kept samples run the
    spatial path; equal to naive masking over samples of the naive net (BatchNorm eval)."""
    x, y = _data(n=6)
    keep = torch.tensor([True, False, True, True, False, False])
    naive, eff = _gp(False), _gp(True)
    # naive reference: the samples' mask on the logits; spatial masks drawn for the kept rows
    logits = naive(x[keep])
    full = torch.zeros(6, 4, dtype=logits.dtype).index_put((keep.nonzero()[:, 0],), logits)
    with torch.no_grad():
        full[~keep] = naive(x[~keep])
    nn.functional.cross_entropy(apply_mask(full, keep, dims=(0,)), y).backward()
    z, _ = efficient_backdrop(eff, x, mask=keep)
    nn.functional.cross_entropy(z, y).backward()
    assert eff.last_plan and eff.last_plan[0]["cropped"]
    _assert_grads_equal(naive, eff)
    bn_train = _gp(True, bn_eval=False)
    with pytest.raises(ValueError, match="batchnorm='subset'"):
        efficient_backdrop(bn_train, x, mask=keep, batchnorm="full")
    z, _ = efficient_backdrop(bn_train, x, mask=keep, batchnorm="subset")
    assert torch.isfinite(z).all()


# --- p as any real scalar, empty batches (functional, layer, batch path) -------------------


@pytest.mark.parametrize(
    "p",
    [
        np.float32(0.5),
        np.float64(0.5),
        np.array(0.5),
        torch.tensor(0.5),
        torch.tensor(0.5, dtype=torch.float64),
        np.int64(0),
        0,
    ],
)
def test_p_accepts_any_real_scalar(p):
    x = torch.randn(4, 3, requires_grad=True)
    g = torch.Generator().manual_seed(0)
    out = backdrop(x, p, dims=(0,), generator=g)
    out.sum().backward()
    layer = Backdrop(p, dims=(0,))
    assert isinstance(layer.p, float) and layer.p == float(p)
    enc = nn.Linear(3, 2)
    z, _ = efficient_backdrop(enc, x.detach(), p, generator=g)
    assert z.shape == (4, 2)
    assert GPNet(width=2, stages=2, input_size=16, p_small=p).mask_small.p == float(p)


@pytest.mark.parametrize(
    "p", [True, False, np.bool_(True), torch.tensor(True), torch.tensor([0.5]), 0.5j, "0.5"]
)
def test_p_refuses_bools_and_non_scalars(p):
    x = torch.randn(4, 3, requires_grad=True)
    for call in (
        lambda: backdrop(x, p, dims=(0,)),
        lambda: Backdrop(p, dims=(0,)),
        lambda: efficient_backdrop(nn.Linear(3, 2), x, p),
    ):
        with pytest.raises(TypeError, match="p must be a"):
            call()


def test_empty_batch_is_named():
    x = torch.randn(0, 3, 4, 4, requires_grad=True)
    with pytest.raises(ValueError, match="x has an empty batch"):
        backdrop(x, 0.5, dims=(-2, -1))
    with pytest.raises(ValueError, match="x has an empty batch"):
        Backdrop(0.5, dims=(0,))(x)
    with pytest.raises(ValueError, match="x has an empty batch"):
        efficient_backdrop(nn.Conv2d(3, 2, 1), x.detach(), 0.5)
    assert backdrop(x, 0.0, dims=(0,)) is x  # p = 0 is a no-op, empty or not
