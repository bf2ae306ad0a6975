"""Model registry and the airbench-style networks."""
from __future__ import annotations

import pytest
import torch

from cifarlab.models import UnknownModelError, count_parameters, create_model, list_models, model_cfg
from cifarlab.training import param_groups


def test_registry_lists_builtin_models():
    assert {"airbench94", "airbench_res"} <= set(list_models())
    assert model_cfg("airbench94").input_size == (3, 32, 32)


def test_unknown_model_lists_close_matches():
    with pytest.raises(UnknownModelError, match="airbench94"):
        create_model("airbench49", 10)


def test_bad_model_kwargs_is_a_clear_error():
    with pytest.raises(ValueError, match="Bad model_kwargs for airbench94"):
        create_model("airbench94", 10, colour="red")


@pytest.mark.parametrize("name,kw", [("airbench94", {}), ("airbench_res", {"widths": (16, 32, 32)})])
def test_forward_backward_shapes(name, kw):
    m = create_model(name, 7, **kw)
    x = torch.randn(4, 3, 32, 32)
    out = m(x)
    assert out.shape == (4, 7) and out.dtype == torch.float32
    out.sum().backward()
    assert m.get_classifier().weight.grad.abs().sum() > 0
    first = next(p for p in m.parameters() if p.requires_grad)   # the gradient reaches the first layer too
    assert first.grad is not None and first.grad.abs().sum() > 0
    assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (4, m.num_features)


def test_airbench94_size_and_frozen_parts():
    m = create_model("airbench94", 10)
    counts = count_parameters(m)
    assert 1.9e6 < counts["total"] < 2.1e6  # about 2M parameters (airbench94)
    assert not m.whiten.weight.requires_grad
    bn = m.groups[0].norm1
    assert not bn.weight.requires_grad and bn.bias.requires_grad


def test_group_activation_is_a_model_keyword():
    """act=silu swaps the conv groups' GELU for SiLU (Hiverge's net) and keeps the stem's GELU: the same
    parameters load into both, and give different outputs; a wrong name is a clear error."""
    torch.manual_seed(0)
    gelu = create_model("airbench94", 10)
    silu = create_model("airbench94", 10, act="silu")
    silu.load_state_dict(gelu.state_dict())
    assert isinstance(silu.groups[2].act, torch.nn.SiLU) and isinstance(silu.act, torch.nn.GELU)
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(gelu(x), silu(x))
    with pytest.raises(ValueError, match="act must be one of gelu, silu"):
        create_model("airbench94", 10, act="relu")


def test_reset_classifier():
    m = create_model("airbench94", 10)
    m.reset_classifier(100)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_whitening_init_decorrelates_patches():
    torch.manual_seed(0)
    # correlated channels: a strong shared component
    base = torch.randn(200, 1, 32, 32)
    images = torch.cat([base + 0.1 * torch.randn(200, 1, 32, 32) for _ in range(3)], 1)
    m = create_model("airbench94", 10)
    m.init_from_data(images)
    w = m.whiten.weight[: m.whiten_width // 2]
    out = torch.nn.functional.conv2d(images, w)
    flat = out.permute(1, 0, 2, 3).reshape(w.shape[0], -1)
    cov = flat @ flat.T / flat.shape[1]
    # whitened: covariance ~ identity (eps keeps tiny-eigenvalue directions below 1)
    off = cov - torch.diag(torch.diag(cov))
    assert off.abs().max() < 0.05
    assert torch.diag(cov)[:3].sub(1).abs().max() < 0.05
    assert torch.equal(m.whiten.weight[m.whiten_width // 2:], -w)


def test_param_groups_split_filters_head_biases():
    m = create_model("airbench94", 10)
    g = param_groups(m)
    assert [(n, id(p)) for n, p in g["head"]] == [("head.weight", id(m.head.weight))]
    assert [n for n, _ in g["whiten"]] == ["whiten.bias"]
    assert all(p.ndim == 4 for _, p in g["filters"]) and all(p.ndim == 1 for _, p in g["bias"])
    n = sum(p.numel() for ps in g.values() for _, p in ps)
    assert n == count_parameters(m)["trainable"]
