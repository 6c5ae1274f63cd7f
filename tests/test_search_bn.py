"""BN recalibration gives exactly the statistics computed directly on the data."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from test_search_fakes import TINY
from torch import nn

from detnas.arch import sample_arch
from detnas.detection.recalibrate import batchnorms, recalibrate_bn
from detnas.supernet import Supernet, materialize


def test_stats_equal_direct_computation() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 1), nn.BatchNorm2d(5),
                          nn.Dropout(0.5))
    for bn in batchnorms(model):
        bn.running_mean.fill_(7.0)
        bn.running_var.fill_(0.01)
    batches = [torch.randn(3, 3, 8, 8) * (1 + i) + i for i in range(5)]
    assert recalibrate_bn(model, batches) == 5

    conv1, bn1, _, conv2, bn2, _ = model
    expected = {0: [], 1: []}
    for x in batches:  # run the layers by hand, normalising with each batch's own statistics as train mode does
        h = conv1(x)
        expected[0].append((h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=True)))
        h = F.relu(F.batch_norm(h, None, None, bn1.weight, bn1.bias, training=True, eps=bn1.eps))
        h = conv2(h)
        expected[1].append((h.mean((0, 2, 3)), h.var((0, 2, 3), unbiased=True)))
    for k, bn in enumerate((bn1, bn2)):
        mean = torch.stack([m for m, _ in expected[k]]).mean(0)
        var = torch.stack([v for _, v in expected[k]]).mean(0)
        torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-6)
        assert bn.momentum == 0.1 and not bn.training
    assert not model.training and not model[5].training, "dropout must not run during recalibration"


def test_recalibrated_child_matches_recalibrated_supernet_path() -> None:
    torch.manual_seed(1)
    supernet = Supernet(TINY).eval()
    arch = sample_arch(TINY, 4)
    batches = [torch.rand(2, 3, 32, 32) for _ in range(3)]
    recalibrate_bn(supernet, batches, forward=lambda m, x: m(x, arch))
    child = materialize(supernet, arch).eval()
    fresh = materialize(Supernet(TINY).eval(), arch)
    fresh.load_state_dict(child.state_dict())
    for bn in batchnorms(fresh):
        bn.reset_running_stats()
    recalibrate_bn(fresh, batches)
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(fresh(x)["c5"], child(x)["c5"], rtol=1e-4, atol=1e-5)
