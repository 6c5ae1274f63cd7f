"""Training an elastic supernet: the sandwich sampler, resumed bit-exact."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from detnas.arch import extreme_arch
from detnas.errors import DetnasError
from detnas.space import get_space
from detnas.train import train_supernet_cls
from detnas.train.sampling import SandwichSampler, make_sampler

from helpers.spaces import TINY_ELASTIC, TINY_ELASTIC_SPEC
from helpers.train import tiny_cls_config

pytestmark = pytest.mark.usefixtures("one_thread")


def test_sandwich_cycles_widest_narrowest_random_and_resumes():
    space = get_space("detnas-300m-det")
    sampler = make_sampler("sandwich", space, seed=3)
    paths = [sampler.sample() for _ in range(8)]
    widest, narrowest = extreme_arch(space, paths[0].choices, True), extreme_arch(space, paths[1].choices, False)
    assert paths[0] == widest and paths[4].genes()[space.num_blocks:] == widest.genes()[space.num_blocks:]
    assert paths[1] == narrowest and paths[5].genes()[space.num_blocks:] == narrowest.genes()[space.num_blocks:]
    assert len({p.hash for p in paths}) == 8
    again = SandwichSampler(space, seed=3)
    for _ in range(3):
        again.sample()
    state = again.state_dict()
    resumed = SandwichSampler(space, seed=99)
    resumed.load_state_dict(state)
    assert [resumed.sample() for _ in range(5)] == paths[3:]
    with pytest.raises(DetnasError, match="space 'detnas-300m' has none"):
        make_sampler("sandwich", get_space("detnas-300m"), 0)


def test_elastic_supernet_resume_is_bit_exact(tmp_path):
    """4 sandwich iterations in one go == 2, stop, resume, 2 more (weights, sliced BN statistics, momentum)."""
    assert TINY_ELASTIC.elastic
    spec = tmp_path / "elastic.json"
    spec.write_text(__import__("json").dumps(TINY_ELASTIC_SPEC))
    small = dict(iterations=4, checkpoint_every=2, batch_size=4, space=str(spec), sampler="sandwich")
    one_go = train_supernet_cls(tiny_cls_config(tmp_path, out=str(tmp_path / "a"), **small))
    stopped = train_supernet_cls(tiny_cls_config(tmp_path, out=str(tmp_path / "b"), stop_at=2, **small))
    resumed = train_supernet_cls(tiny_cls_config(tmp_path, out=str(tmp_path / "b"), resume=True, **small))
    a, b, half = load_file(str(one_go)), load_file(str(resumed)), load_file(str(stopped))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(half[k], a[k]) for k in a if a[k].is_floating_point())


def test_elastic_supernet_det_trains_and_its_checkpoint_loads_a_path(tmp_path):
    """Detection fine-tuning of an elastic supernet (sandwich paths), then a path loaded from its checkpoint as a
    plain detector."""
    import json

    from detnas.arch import Arch, sample_arch
    from detnas.detection import load_detector
    from detnas.train import resolve_config, train_supernet_det

    from helpers.data import shared_dataset
    from helpers.train import coco_subset

    coco128 = shared_dataset("coco128")
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(TINY_ELASTIC_SPEC))
    cls_final = train_supernet_cls(tiny_cls_config(tmp_path, iterations=1, space=str(space_file),
                                                   out=str(tmp_path / "cls")))
    ann = coco_subset(coco128, tmp_path, images=2)
    images = str(coco128 / "train2017")
    cfg = resolve_config("cpu-det", overrides=dict(init=str(cls_final), iterations=4, batch_size=1, min_size=64, max_size=96, roi_batch=8,
                                                   log_every=1, checkpoint_every=4, device="cpu", space=str(space_file),
                                                   data=images, ann=str(ann), sampler="sandwich",
                                                   out=str(tmp_path / "det")))
    final = train_supernet_det(cfg)
    records = [json.loads(line) for line in (tmp_path / "det" / "metrics.jsonl").read_text().splitlines()]
    paths = [r["path"] for r in records if "loss" in r]
    assert len(paths) == 4 and ";fpn=32,convs=2,fc=64,proposals=20" in paths[0] and "fpn=16" in paths[1]
    arch = sample_arch(TINY_ELASTIC, 5)
    detector, meta = load_detector(final, Arch.from_json(arch.to_json()))
    assert meta.kind == "supernet-det" and detector.backbone.out_channels == arch.detector.fpn_width
    # the search's scored settings (journal header, best_arch.json) on an elastic supernet: each path's proposals
    # are its own gene's, so no run-wide figure is recorded
    from pathlib import Path

    from detnas.data import CocoDetection
    from detnas.detection.supernet_path import SupernetDetector
    from detnas.search.latency import Timing
    from detnas.search.runner import SearchRequest, scored_with

    supernet = SupernetDetector.load(final)
    data = CocoDetection(ann, images)
    request = SearchRequest(supernet=final, data=Path(ann), images=Path(images), bn_data=Path(ann), out=tmp_path / "search")
    scored = scored_with(request, supernet, data, data, Timing(size=(64, 96)), "AP")
    assert scored.proposals is None and scored.detector == "fpn" and scored.latency_size == (64, 96)
