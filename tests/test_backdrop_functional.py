"""Tests for backdrop.functional: identity forward, Eq. 1 masked gradient, lattices, RNG."""

import math

import pytest
import torch

from backdrop import (
    apply_mask,
    backdrop,
    cell_bounds,
    expand_mask,
    mask_weights,
    sample_mask,
    scale_gradient,
)

EPS32 = torch.finfo(torch.float32).eps
# grad * (N/|b|_1): two float32 roundings (the weight, then the product) -> <= 2 eps relative.
RTOL = 2 * EPS32


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cell_index(j: int, size: int, cells: int) -> int:
    b = cell_bounds(size, cells)
    return next(i for i in range(cells) if b[i] <= j < b[i + 1])


@pytest.mark.parametrize(
    "shape,dims,lattice,per_sample",
    [
        ((6, 5), (0,), None, False),
        ((4, 3, 8, 8), (-2, -1), None, False),
        ((4, 3, 8, 8), (-2, -1), (4, 4), True),
        ((2, 3, 7, 5), (0, -2, -1), (2, 3, 2), False),
    ],
)
def test_forward_is_identity_and_zero_copy(shape, dims, lattice, per_sample):
    x = torch.randn(shape, requires_grad=True)
    y = backdrop(x, 0.5, dims=dims, lattice=lattice, per_sample=per_sample, generator=_gen(0))
    assert torch.equal(y, x)
    assert y.data_ptr() == x.data_ptr()


def test_sample_dim_gradient_matches_eq1_by_hand():
    b, d = 8, 5
    x = torch.randn(b, d, requires_grad=True)
    g = torch.randn(b, d)
    y, mask = backdrop(x, 0.5, dims=(0,), generator=_gen(1), return_mask=True)
    y.backward(g)
    kept = int(mask.sum())
    assert 1 <= kept <= b
    expected = torch.zeros(b, d, dtype=torch.float64)
    for n in range(b):
        if mask[n]:
            expected[n] = g[n].double() * b / kept
    torch.testing.assert_close(x.grad.double(), expected, rtol=RTOL, atol=0.0)


def test_parameter_gradient_is_eq2():
    """grad_W of f(M_p(W x)) = N/|b|_1 * sum over kept n of (df/dh_n) x_n^T."""
    b, d_in, d_out = 10, 4, 3
    lin = torch.nn.Linear(d_in, d_out, bias=False).double()
    x = torch.randn(b, d_in, dtype=torch.float64)
    h, mask = backdrop(lin(x), 0.6, dims=(0,), generator=_gen(2), return_mask=True)
    loss = (h.sum(0) ** 2).sum()  # non-decomposable over samples
    loss.backward()
    dfdh = 2 * lin(x).sum(0).detach()  # same for every sample
    kept = int(mask.sum())
    expected = sum(torch.outer(dfdh, x[n]) for n in range(b) if mask[n]) * (b / kept)
    torch.testing.assert_close(lin.weight.grad, expected, rtol=1e-12, atol=0.0)


@pytest.mark.parametrize("size,cells", [(8, 4), (7, 3), (300, 7), (5, 5), (9, 1)])
def test_cell_bounds_partition_nearly_equal_blocks(size, cells):
    b = cell_bounds(size, cells)
    assert b[0] == 0 and b[-1] == size and len(b) == cells + 1
    sizes = [b[i + 1] - b[i] for i in range(cells)]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    assert b == [math.floor(i * size / cells) for i in range(cells + 1)]


@pytest.mark.parametrize(
    "per_sample,expect_per_sample", [(None, True), (True, True), (False, False)]
)
def test_lattice_gradient_matches_loop(per_sample, expect_per_sample):
    """Default (None): a mask per sample; per_sample=False: one mask shared by the batch."""
    bsz, c, h, w, lh, lw = 3, 2, 7, 10, 3, 4
    x = torch.randn(bsz, c, h, w, requires_grad=True)
    g = torch.randn(bsz, c, h, w)
    y, mask = backdrop(
        x,
        0.5,
        dims=(-2, -1),
        lattice=(lh, lw),
        per_sample=per_sample,
        generator=_gen(3),
        return_mask=True,
    )
    y.backward(g)
    assert mask.shape == ((bsz, lh, lw) if expect_per_sample else (lh, lw))
    expected = torch.zeros(bsz, c, h, w, dtype=torch.float64)
    for n in range(bsz):
        m = mask[n] if expect_per_sample else mask
        scale = lh * lw / int(m.sum())
        for i in range(h):
            for j in range(w):
                if m[_cell_index(i, h, lh), _cell_index(j, w, lw)]:
                    expected[n, :, i, j] = g[n, :, i, j].double() * scale
    torch.testing.assert_close(x.grad.double(), expected, rtol=RTOL, atol=0.0)


def test_mask_weights_normalization():
    m = sample_mask((5, 4, 4), 0.7, per_sample=True, generator=_gen(4))
    w = mask_weights(m, per_sample=True)
    # each sample: weights sum to N = 16 cells, kept cells weigh N / |b_n|_1, dropped 0
    torch.testing.assert_close(w.sum(dim=(1, 2)), torch.full((5,), 16.0), rtol=4 * EPS32, atol=0)
    for n in range(5):
        assert torch.all(w[n][m[n]] == 16 / float(m[n].sum()))
        assert torch.all(w[n][~m[n]] == 0)
    wg = mask_weights(m)  # shared normalization over all 80 cells
    torch.testing.assert_close(wg.sum(), torch.tensor(80.0), rtol=4 * EPS32, atol=0)


def test_at_least_one_cell_kept():
    gen = _gen(5)
    for _ in range(50):
        m = sample_mask((4, 64), 0.999, per_sample=True, generator=gen)
        assert torch.all(m.sum(dim=1) >= 1)
        assert sample_mask((64,), 0.999, generator=gen).sum() >= 1
    # p just below 1 rounds to 1.0 against float32 uniforms in [0, 1): the draw drops every cell
    # and the fallback keeps exactly one per sample, chosen uniformly
    counts = torch.zeros(8)
    for _ in range(400):
        m = sample_mask((1, 8), 1 - 1e-12, per_sample=True, generator=gen)
        assert int(m.sum()) == 1
        counts += m[0].float()
    # multinomial(400, 1/8): each count 50 +- 5 sigma (sigma = sqrt(400 * 1/8 * 7/8) = 6.6)
    assert torch.all((counts - 50).abs() < 5 * math.sqrt(400 / 8 * 7 / 8))


def test_keep_rate_is_one_minus_p():
    n, p = 200_000, 0.3
    kept = sample_mask((n,), p, generator=_gen(6)).float().mean().item()
    assert abs(kept - (1 - p)) < 5 * math.sqrt(p * (1 - p) / n)


def test_p_zero_is_plain_gradient_and_draws_nothing():
    x = torch.randn(4, 3, requires_grad=True)
    gen = _gen(7)
    state = gen.get_state()
    y = backdrop(x, 0.0, dims=(0,), generator=gen)
    assert y is x
    assert torch.equal(gen.get_state(), state)


def test_no_draw_without_grad():
    gen = _gen(8)
    state = gen.get_state()
    x = torch.randn(4, 3)
    assert backdrop(x, 0.5, dims=(0,), generator=gen) is x
    xr = x.clone().requires_grad_()
    with torch.no_grad():
        assert backdrop(xr, 0.5, dims=(0,), generator=gen) is xr
    assert torch.equal(gen.get_state(), state)


def test_seeded_generator_is_reproducible():
    def run(seed):
        x = torch.ones(2, 1, 16, 16, requires_grad=True)
        y = backdrop(x, 0.8, dims=(-2, -1), lattice=(8, 8), generator=_gen(seed))
        y.sum().backward()
        return x.grad

    assert torch.equal(run(11), run(11))
    assert not torch.equal(run(11), run(12))


def test_expand_mask_shape_and_broadcast():
    cells = torch.arange(6.0).reshape(2, 3)
    e = expand_mask(cells, (4, 2, 5, 7), (-2, -1), (2, 3))
    assert e.shape == (1, 1, 5, 7)
    # rows: cells [0, 2), [2, 5); cols: [0, 2), [2, 4), [4, 7)
    expected = [[0, 0, 1, 1, 2, 2, 2]] * 2 + [[3, 3, 4, 4, 5, 5, 5]] * 3
    assert torch.equal(e[0, 0], torch.tensor(expected, dtype=torch.float32))
    e0 = expand_mask(torch.ones(4, dtype=torch.bool), (4, 2, 5, 7), (0,))
    assert e0.shape == (4, 1, 1, 1)


def test_dims_order_does_not_matter():
    x = torch.randn(2, 1, 6, 9, requires_grad=True)
    _, m1 = backdrop(x, 0.5, dims=(-2, -1), lattice=(2, 3), generator=_gen(9), return_mask=True)
    _, m2 = backdrop(x, 0.5, dims=(-1, -2), lattice=(3, 2), generator=_gen(9), return_mask=True)
    assert m1.shape == m2.shape == (2, 2, 3)  # (B, cells...), cell dims in increasing order
    assert torch.equal(m1, m2)


def test_apply_mask_validates_mask():
    x = torch.randn(4, 3, requires_grad=True)
    with pytest.raises(ValueError, match="mask has shape"):
        apply_mask(x, torch.ones(3, dtype=torch.bool), dims=(0,))
    with pytest.raises(ValueError, match="at least one"):
        apply_mask(x, torch.zeros(4, dtype=torch.bool), dims=(0,))
    with pytest.raises(TypeError, match="bool"):
        apply_mask(x, torch.ones(4), dims=(0,))


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(p=-0.1), ValueError, r"p must be in \[0, 1\).*p=-0.1"),
        (dict(p=1.5), ValueError, r"p must be in \[0, 1\).*p=1.5"),
        (dict(p=1.0), ValueError, r"p must be in \[0, 1\).*p=1.0"),
        (dict(p=float("nan")), ValueError, r"p must be in \[0, 1\).*p=nan"),
        (dict(p="0.5"), TypeError, "p must be a float"),
        (dict(dims=(4,)), ValueError, r"dims entry 4 out of range.*\[-4, 3\]"),
        (dict(dims=(2, -2)), ValueError, "dims must be distinct"),
        (dict(dims=(0, 2), per_sample=True), ValueError, "must not contain dim 0"),
        (dict(dims=(-2, -1), lattice=(2,)), ValueError, "one entry per masked dim"),
        (dict(dims=(-2, -1), lattice=(9, 2)), ValueError, r"in \[1, 8\].*got 9"),
        (dict(dims=(-2, -1), lattice=(0, 2)), ValueError, "lattice entries must be ints >= 1"),
        (dict(dims=(-2, -1), lattice=(-3, 2)), ValueError, r"lattice entries.*\(-3, 2\)"),
        (dict(dims=(-5,)), ValueError, r"dims entry -5 out of range.*\[-4, 3\]"),
        (dict(dims=(-2, -1), per_sample="yes"), TypeError, "per_sample must be a bool"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    args = dict(p=0.5, dims=(0,))
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        backdrop(x, args.pop("p"), **args)


def test_inplace_on_output_raises_instead_of_silently_wrong():
    x = torch.randn(4, 3, requires_grad=True)
    y = backdrop(x * 1, 0.5, dims=(0,), generator=_gen(10))
    with pytest.raises(RuntimeError, match="inplace"):
        torch.relu_(y)


def test_bfloat16_autocast_on_cpu():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(4, 2, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = conv(x)
        y, mask = backdrop(
            h, 0.5, dims=(-2, -1), lattice=(4, 4), generator=_gen(11), return_mask=True
        )
    assert y.dtype == torch.bfloat16 and torch.equal(y, h)
    g = torch.randn_like(h)
    hg = torch.autograd.grad(y, h, g)[0]
    assert hg.dtype == torch.bfloat16
    assert mask.shape == (4, 4, 4)  # per sample by default
    w = expand_mask(mask_weights(mask, per_sample=True), h.shape, (-2, -1), (4, 4), per_sample=True)
    # one bfloat16 rounding of the weight and one of the product: <= 2 * 2^-8 relative
    eps_bf16 = torch.finfo(torch.bfloat16).eps
    torch.testing.assert_close(hg.double(), g.double() * w.double(), rtol=2 * eps_bf16, atol=0.0)


@pytest.mark.parametrize("per_sample", [False, True])
def test_masked_gradient_is_unbiased(per_sample):
    """sum_n b_n / |b|_1 = 1 whenever |b|_1 >= 1, and the cells are exchangeable (also under the
    keep-one fallback), so E[b_n N / |b|_1] = 1: the masked gradient averages to the plain one."""
    n_draws, p, cells = 1000, 0.8, 6
    gen = _gen(13)
    masks = torch.stack(
        [sample_mask((2, cells), p, per_sample=per_sample, generator=gen) for _ in range(n_draws)]
    )
    w = torch.stack([mask_weights(m, per_sample=per_sample) for m in masks]).double()
    mean = w.mean(0)
    # standard error of each cell's mean weight, estimated from the draws; 5 sigma bound
    se = w.std(0) / math.sqrt(n_draws)
    assert torch.all((mean - 1).abs() < 5 * se)


def test_scale_gradient_with_per_sample_scale():
    x = torch.randn(3, 4, requires_grad=True)
    s = torch.tensor([[2.0], [0.0], [0.5]])
    y = scale_gradient(x, s)
    assert torch.equal(y, x)
    g = torch.randn(3, 4)
    y.backward(g)
    assert torch.equal(x.grad, g * s)  # multiplications by 2, 0 and 0.5 are exact in float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_generator_and_device():
    x = torch.randn(3, 2, 8, 8, device="cuda", requires_grad=True)
    gen = torch.Generator(device="cuda").manual_seed(0)
    y, mask = backdrop(x, 0.5, dims=(-2, -1), lattice=(4, 4), generator=gen, return_mask=True)
    assert mask.device.type == "cuda" and mask.shape == (3, 4, 4)
    y.sum().backward()
    w = expand_mask(mask_weights(mask, per_sample=True), x.shape, (-2, -1), (4, 4), per_sample=True)
    torch.testing.assert_close(x.grad, w.expand_as(x), rtol=RTOL, atol=0.0)
    again = backdrop(
        x, 0.5, dims=(-2, -1), lattice=(4, 4), generator=gen.manual_seed(0), return_mask=True
    )[1]
    assert torch.equal(again, mask)
