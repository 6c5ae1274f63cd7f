import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from detnas.arch import released_archs, sample_arch
from detnas.errors import DetnasError
from detnas.flops import count_flops, count_params
from detnas.space import get_space
from detnas.supernet import ChildNet, Supernet, materialize


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    net = Supernet(get_space("detnas-300m"), num_classes=10)
    # non-trivial BN statistics so that parity is not an artefact of identity BNs
    with torch.no_grad():
        net.train()
        for seed in range(3):
            net(torch.randn(2, 3, 64, 64), sample_arch(net.space, seed))
    return net.eval()


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow), pytest.param(2, marks=pytest.mark.slow)])
def test_materialized_child_matches_supernet_path(supernet, seed):
    arch = sample_arch(supernet.space, seed)
    child = materialize(supernet, arch).eval()
    x = torch.randn(2, 3, 96, 128)
    with torch.no_grad():
        assert torch.equal(supernet(x, arch), child(x))
    features = materialize(supernet, arch, with_head=False).eval()
    with torch.no_grad():
        out = features(x)
    assert list(out) == ["c2", "c3", "c4", "c5"]
    assert [t.shape[-1] for t in out.values()] == [32, 16, 8, 4]  # strides 4, 8, 16, 32
    assert [t.shape[1] for t in out.values()] == [64, 160, 320, 640]
    # the child is independent: changing it leaves the supernet untouched
    with torch.no_grad():
        next(child.parameters()).add_(1.0)
    assert not torch.equal(next(child.parameters()), next(supernet.parameters()))


def test_supernet_rejects_foreign_arch(supernet):
    with pytest.raises(DetnasError, match="space 'detnas-1.3g'"):
        supernet(torch.randn(1, 3, 64, 64), released_archs()["COCO-FPN-1.3G"])


@pytest.mark.parametrize("name", ["COCO-FPN-300M", pytest.param("VOC-RetinaNet-300M", marks=pytest.mark.slow)])
@pytest.mark.parametrize("size", [(224, 224), pytest.param((320, 320), marks=pytest.mark.slow),
                                  pytest.param((200, 296), marks=pytest.mark.slow)])  # 3-7 s of CPU each
def test_flops_match_flop_counter(name, size):
    arch = released_archs()[name]
    for num_classes in (0, 1000):
        model = ChildNet(arch, num_classes or None).eval()
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, 3, *size))
        assert 2 * count_flops(arch, size, num_classes) == counter.get_total_flops()


def test_params_match_paper_and_module():
    reported = {"COCO-FPN-300M": 3.5, "COCO-RetinaNet-300M": 3.7, "VOC-FPN-300M": 3.7, "VOC-RetinaNet-300M": 3.5,
                "COCO-FPN-1.3G": 10.4}
    for name, millions in reported.items():
        arch = released_archs()[name]
        assert round(count_params(arch, 1000) / 1e6, 1) == millions
    arch = released_archs()["COCO-FPN-300M"]
    assert count_params(arch) == sum(p.numel() for p in ChildNet(arch).parameters())
