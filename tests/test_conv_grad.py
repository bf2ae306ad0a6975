"""The matrix-product weight gradient of small 3x3 convolutions (cifarlab.models.conv_grad)."""
from __future__ import annotations

import pytest
import torch

from cifarlab.models.airbench import DiracConv
from cifarlab.models.conv_grad import weight_grad_gemm


def native_weight_grad(x, g, w):
    return torch.ops.aten.convolution_backward(g, x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1,
                                               [False, True, False])[1]


@pytest.mark.parametrize("shape", [(3, 5, 5, 5), (2, 4, 3, 7), (4, 6, 2, 2), (1, 3, 1, 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_weight_grad_matches_the_convolution_backward(shape, channels_last):
    b, i, h, w = shape
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.randn(b, i, h, w).contiguous(memory_format=fmt)
    g = torch.randn(b, 8, h, w).contiguous(memory_format=fmt)
    wt = torch.randn(8, i, 3, 3)
    got = weight_grad_gemm(x, g)
    assert got.shape == (8, i, 3, 3)
    torch.testing.assert_close(got, native_weight_grad(x, g, wt), rtol=1e-5, atol=1e-5)


def grads(conv, x, monkeypatch, mode):
    monkeypatch.setenv("CIFARLAB_CONV_WGRAD", mode)
    conv.zero_grad(set_to_none=True)
    x = x.detach().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = conv(x)
    (y.float() * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    return y, x.grad, conv.weight.grad, type(y.grad_fn).__name__


def test_dirac_conv_takes_the_product_only_where_it_is_faster(monkeypatch):
    torch.manual_seed(0)
    conv = DiracConv(16, 32)
    small = torch.randn(8, 16, 5, 5)
    y, gx, gw, fn = grads(conv, small, monkeypatch, "auto")
    assert fn == "Conv3x3GemmGradBackward"
    y0, gx0, gw0, fn0 = grads(conv, small, monkeypatch, "native")
    assert fn0 != fn
    assert torch.equal(y, y0)                       # same forward: only the weight gradient's sum differs
    assert gw.dtype == torch.float32                # the fp32 master weight gets its gradient through the cast
    torch.testing.assert_close(gx, gx0)
    torch.testing.assert_close(gw, gw0, rtol=2e-2, atol=2e-2 * gw0.abs().max().item())
    assert grads(conv, torch.randn(8, 16, 7, 7), monkeypatch, "auto")[3] != fn   # large maps: oneDNN's kernel
    conv.eval()
    assert grads(conv, small, monkeypatch, "auto")[3] != fn                     # evaluation and export
    conv.train()
    monkeypatch.setenv("CIFARLAB_CONV_WGRAD", "auto")
    assert type(conv(small.requires_grad_()).grad_fn).__name__ != fn             # fp32 without autocast


def test_a_misspelt_switch_is_a_clear_error(monkeypatch):
    from cifarlab.config import ConfigError
    conv = DiracConv(4, 4)
    monkeypatch.setenv("CIFARLAB_CONV_WGRAD", "off")
    with pytest.raises(ConfigError, match="CIFARLAB_CONV_WGRAD='off'.*auto.*native.*gemm"):
        DiracConv(4, 4)                                  # when the model is built
    with pytest.raises(ConfigError, match="CIFARLAB_CONV_WGRAD='off'"), torch.autocast("cpu", dtype=torch.bfloat16):
        conv(torch.randn(2, 4, 3, 3))                    # and should it change after
