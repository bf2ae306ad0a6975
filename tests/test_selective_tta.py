"""Selective TTA (config ``tta_fraction``): the views go to the images the model is least sure of."""
from __future__ import annotations

import pytest
import torch

from cifarlab.config import ConfigError, TrainConfig
from cifarlab.data.augment import tta_views
from cifarlab.evaluation.metrics import predict_logits, selective_tta_logits


class CountingNet(torch.nn.Module):
    """A small random conv net that counts the images it is given."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                        torch.nn.Flatten(), torch.nn.Linear(8, 10))
        self.images = 0

    def forward(self, x):
        self.images += len(x)
        return 20 * self.body(x)   # spread-out logits, so the confidences differ between images


def _plain_tta(net, x, level):
    return sum(w * net(v).float() for w, v in tta_views(x, level))


@pytest.mark.parametrize("level", [1, 2, 3])
def test_fraction_one_is_plain_tta_and_a_fraction_gives_the_views_to_the_least_sure(level):
    net, x = CountingNet().eval(), torch.randn(40, 3, 12, 12)
    with torch.no_grad():
        full, own = _plain_tta(net, x, level), net(x)
        assert torch.equal(selective_tta_logits(net, x, level, 1.0), full)
        net.images = 0
        sel = selective_tta_logits(net, x, level, 0.25)
    views = len(tta_views(x, level))
    assert net.images == 40 + 10 * (views - 1)         # the image's own view once, the others for 10 images
    changed = ~torch.isclose(sel, own).all(1)
    assert changed.sum() == 10
    conf = own.softmax(1).amax(1)
    assert conf[changed].max() <= conf[~changed].min()  # exactly the 10 least confident
    torch.testing.assert_close(sel[changed], full[changed], rtol=1e-5, atol=1e-5)
    assert torch.equal(sel[~changed], own[~changed])


def test_predict_logits_passes_the_fraction_per_batch():
    net, x = CountingNet(), torch.randn(30, 3, 12, 12)
    batches = [(x[:20], torch.zeros(20, dtype=torch.long)), (x[20:], torch.zeros(10, dtype=torch.long))]
    logits, _ = predict_logits(net, batches, tta=2, tta_fraction=0.1)
    assert logits.shape == (30, 10) and net.training
    assert net.images == 30 + (2 + 1) * 5               # ceil(0.1 x 20) + ceil(0.1 x 10) images get 5 more views


@pytest.mark.parametrize("value", [0.0, 1.5])
def test_config_refuses_out_of_range_fractions(value):
    with pytest.raises(ConfigError, match="tta_fraction"):
        TrainConfig(tta_fraction=value).validate()
