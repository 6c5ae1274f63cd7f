import pytest
import torch

from detnas.data import image_folder
from detnas.errors import DetnasError


def test_cifar_is_upsampled(cifar10):
    dataset = image_folder(cifar10 / "test", size=96)
    assert len(dataset.classes) == 10 and len(dataset) == 2000
    image, label = dataset[0]
    assert image.shape == (3, 96, 96) and image.dtype == torch.uint8 and dataset.classes[label] == "airplane"


def test_missing_or_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DetnasError, match="classification folder not found"):
        image_folder(tmp_path / "none", size=64)
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DetnasError, match="no images found"):
        image_folder(tmp_path / "empty", size=64)
