"""Tests for backdrop.models: Table 1 networks, mask placement and lattices, p=0 training."""

import copy

import pytest
import torch
from torch import nn

from backdrop import Backdrop
from backdrop.models import AllConvNet, GPNet, PonceNet, lattice_size, mask_stage


def _mask_inputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    """Shapes of the tensors reaching each Backdrop layer in one forward."""
    shapes = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: shapes.__setitem__(n, tuple(i[0].shape)))
        for n, m in model.named_modules()
        if isinstance(m, Backdrop)
    ]
    model(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize(
    "size,small,large,small_map,large_map",
    [(1024, 64, 4, 64, 8), (256, 16, 1, 16, 2)],
)
def test_gp_net_lattices_at_paper_sizes(size, small, large, small_map, large_map):
    """1024 px: 16-px patches on a 64x64 lattice, 256-px patches on 4x4 (paper Sec. 3.2).

    The forward runs on the meta device (shapes only), since a real 1024x1024 forward of the
    width-64 net takes seconds on a CPU.
    """
    with torch.device("meta"):
        net = GPNet(input_size=size).eval()
        shapes = _mask_inputs(net, torch.empty(2, 1, size, size))
        assert net(torch.empty(2, 1, size, size)).shape == (2, 4)
    assert net.lattices == {"small": (small, small), "large": (large, large)}
    assert shapes["mask_small"] == (2, 64, small_map, small_map)
    assert shapes["mask_large"] == (2, 4, large_map, large_map)  # after the final conv (Table 1 *)
    # each small cell covers 16x16 input pixels at both sizes
    assert size // small_map * (small_map // small) == 16


def test_mask_placement_rule():
    assert [mask_stage(p, 7) for p in (1, 2, 16, 20, 128, 256, 4096)] == [1, 1, 4, 4, 7, 7, 7]
    assert lattice_size(1024, 16) == 64 and lattice_size(1024, 256) == 4
    assert lattice_size(128, 256) == 1 and lattice_size(1024, 16, feature_size=8) == 8
    with pytest.raises(ValueError, match="patch_size must be > 0.*-3"):
        lattice_size(64, -3)


def test_gp_net_small_input_forward_and_per_sample_masks():
    gen = torch.Generator().manual_seed(0)
    net = GPNet(width=8, input_size=64, large_patch=32, p_small=0.9, p_large=0.5, generator=gen)
    assert net.lattices == {"small": (4, 4), "large": (2, 2)}
    x = torch.randn(3, 1, 64, 64)
    out = net(x)
    assert out.shape == (3, 4)
    out.sum().backward()
    assert net.mask_small.kept_cells().shape == (3, 4, 4)
    assert net.mask_large.kept_cells().shape == (3, 2, 2)
    assert torch.all(net.mask_small.kept_cells().sum(dim=(1, 2)) >= 1)


def test_masks_do_not_change_the_forward_in_train_mode():
    torch.manual_seed(0)
    plain = GPNet(width=8, input_size=64, large_patch=32)
    masked = GPNet(width=8, input_size=64, large_patch=32, p_small=0.99, p_large=0.75)
    masked.load_state_dict(plain.state_dict())
    x = torch.randn(4, 1, 64, 64)
    assert torch.equal(plain(x), masked(x))  # train mode: BN batch stats, masks drawn
    assert masked.mask_small.kept_cells() is not None


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 3) -> nn.Module:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def _strip_masks(model: nn.Module) -> nn.Module:
    plain = copy.deepcopy(model)
    for mod in list(plain.modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, Backdrop):
                setattr(mod, child_name, nn.Identity())
    assert not any(isinstance(m, Backdrop) for m in plain.modules())
    return plain


@pytest.mark.parametrize(
    "make,shape,classes",
    [
        (lambda: GPNet(width=8, input_size=64, large_patch=32), (4, 1, 64, 64), 4),
        (lambda: PonceNet(width=8, input_size=(60, 80), patch_size=(15, 16)), (4, 1, 60, 80), 25),
        (lambda: AllConvNet(widths=(8, 16)), (4, 3, 32, 32), 10),
    ],
)
def test_p_zero_masks_train_identically_to_plain_network(make, shape, classes):
    torch.manual_seed(0)
    masked = make()
    plain = _strip_masks(masked)
    x = torch.randn(shape)
    y = torch.arange(shape[0]) % classes
    _train(masked, x, y)
    _train(plain, x, y)
    sd_m, sd_p = masked.state_dict(), plain.state_dict()
    assert sd_m.keys() == sd_p.keys()
    for k in sd_m:
        assert torch.equal(sd_m[k], sd_p[k]), k


def test_masking_changes_training():
    torch.manual_seed(0)
    plain = GPNet(width=8, input_size=64, large_patch=32)
    masked = GPNet(
        width=8,
        input_size=64,
        large_patch=32,
        p_small=0.9,
        generator=torch.Generator().manual_seed(1),
    )
    masked.load_state_dict(plain.state_dict())
    x, y = torch.randn(4, 1, 64, 64), torch.tensor([0, 1, 2, 3])
    _train(plain, x, y, steps=1)
    _train(masked, x, y, steps=1)
    w_p, w_m = plain.body[0].weight, masked.body[0].weight
    assert not torch.allclose(w_p, w_m)


def test_ponce_net_paper_lattice_and_shapes():
    with torch.device("meta"):
        net = PonceNet().eval()
        heat = net.heatmap(torch.empty(1, 1, 300, 400))
    assert net.lattice == (5, 6)  # 30 patches of ~60x67 px, as in the paper
    assert heat.shape == (1, 25, 19, 25)
    small = PonceNet(width=8, input_size=(60, 80), patch_size=(10, 10))
    assert small.lattice == (4, 5)  # 6x8 patches asked, clipped to the 4x5 heatmap
    assert small(torch.randn(2, 1, 60, 80)).shape == (2, 25)


def test_all_conv_net_heatmap_and_features():
    net = AllConvNet(widths=(8, 16), p=0.9, generator=torch.Generator().manual_seed(2))
    x = torch.randn(2, 3, 32, 32)
    assert net.heatmap(x).shape == (2, 10, 6, 6) and net.lattice == (6, 6)
    logits, v = net.forward_features(x)
    assert logits.shape == (2, 10) and v.shape == (2, 16)
    logits.sum().backward()
    assert net.mask.kept_cells().shape == (2, 6, 6)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: GPNet(width=0), "width must be an int >= 1, got 0"),
        (lambda: GPNet(small_patch=0), "patch_size must be > 0"),
        (lambda: GPNet(p_small=1.5), r"p must be in \[0, 1\).*p=1.5"),
        (lambda: PonceNet(p=1.0), r"p must be in \[0, 1\).*p=1.0"),
        (lambda: PonceNet(input_size=(300, 400, 3)), "input_size must be"),
        (lambda: AllConvNet(input_size=4), "input_size must be >= 9"),
        (lambda: AllConvNet(widths=(8,)), "widths must be a pair"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(masks=[("a", 4, 0.5), ("a", 8, 0.5)]), "distinct"),
        (dict(masks=[("2x", 4, 0.5)]), "identifiers"),
        (dict(masks=[("layers", 4, 0.5)]), "identifiers other than"),
        (dict(masks=[("a", 4)]), r"\(name, patch_px, p\) triples"),
        (dict(masks=[("a", 4, 0.5)], p_small=0.5), "not both"),
        (dict(masks=[("a", 4, 1.0)]), r"p must be in \[0, 1\)"),
        (dict(masks=[("a", 0, 0.5)]), "patch_size must be > 0"),
    ],
)
def test_gp_net_bad_masks(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GPNet(width=4, stages=3, input_size=64, **kwargs)


def test_gp_net_explicit_masks_equal_the_default_pair():
    """masks=[("small", 16, p), ("large", 256, p)] builds the default network: same layers,
    same state-dict keys (checkpoints of either load into the other)."""
    with torch.device("meta"):
        default = GPNet(p_small=0.9, p_large=0.5)
        explicit = GPNet(masks=[("small", 16, 0.9), ("large", 256, 0.5)])
    assert list(default.state_dict()) == list(explicit.state_dict())
    assert [type(m) for m in default.body] == [type(m) for m in explicit.body]
    assert default.lattices == explicit.lattices


def test_gp_net_mask_attributes():
    net = GPNet(
        num_classes=8,
        width=4,
        stages=4,
        input_size=512,
        masks=[("fine", 8, 0.99), ("medium", 64, 0.9), ("coarse", 256, 0.5)],
    )
    assert set(net.mask_layers) == {"fine", "medium", "coarse"}
    assert net.mask_layers["fine"] is net.mask_fine and net.mask_fine.p == 0.99
    assert net.lattices == {"fine": (64, 64), "medium": (8, 8), "coarse": (2, 2)}
    default = GPNet(width=4, stages=4, input_size=64, large_patch=32)
    assert list(default.mask_layers) == ["small", "large"]
    assert not default.efficient and GPNet(width=4, efficient=True).efficient
