"""Fast from-scratch CNNs for 32x32 input in the airbench style.

Source: Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU" (arXiv:2404.00498) and
github.com/KellerJordan/cifar10-airbench. Ingredients kept here:

* a 2x2 convolution stem whose filters are the eigenvectors of the patch covariance of training
  images (patch whitening), frozen, in +/- pairs, followed by GELU;
* conv groups ``conv -> maxpool -> BN -> GELU -> conv -> BN -> GELU`` with widths 64/256/256;
* convolutions initialised as identity (Dirac) on their first ``in_channels`` filters;
* BatchNorm with frozen scale, eps 1e-12 and a fast running-stats momentum (0.4 in torch terms);
* a bias-free linear head whose output is divided by the feature width.

``airbench_res`` is the deeper residual variant (airbench96's group: a third conv and a skip
connection around the last two), meant for CIFAR-100.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ConfigError
from .conv_grad import conv3x3_gemm_grad, use_gemm_weight_grad, weight_grad_mode


class StemBiasSchedule:
    """The per-step hook of `AirbenchNet.step_hook`: the stem bias trains for ``steps`` steps."""

    def __init__(self, bias: nn.Parameter, steps: int):
        self.bias, self.steps = bias, steps

    def start(self) -> None:
        self.bias.requires_grad_(True)

    def __call__(self, step: int) -> None:
        self.bias.requires_grad_(step < self.steps)


class NoHook:
    """The per-step hook of a model without a schedule of its own: does nothing."""

    def start(self) -> None:
        pass

    def __call__(self, step: int) -> None:
        pass


def step_hook(model: nn.Module, whiten_bias_steps: int):
    """The hook the training loop calls before each optimizer step: `AirbenchNet.step_hook` for
    an airbench net, else `NoHook`."""
    return model.step_hook(whiten_bias_steps) if isinstance(model, AirbenchNet) else NoHook()


class FrozenScaleBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose scale (weight) is fixed at 1; only the bias trains (airbench)."""

    def __init__(self, num_features: int, momentum: float = 0.4, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)


class DiracConv(nn.Conv2d):
    """3x3 'same' convolution without bias, its first ``in_channels`` filters initialised to identity."""

    def __init__(self, cin: int, cout: int):
        weight_grad_mode()  # a misspelt CIFARLAB_CONV_WGRAD fails here, not at the first training step
        super().__init__(cin, cout, kernel_size=3, padding="same", bias=False)

    def reset_parameters(self):
        super().reset_parameters()
        w = self.weight.data
        nn.init.dirac_(w[: w.size(1)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, cin, H, W) -> (B, cout, H, W). Training on CPU with small maps takes the faster weight
        gradient of `cifarlab.models.conv_grad`; evaluation and export take ``nn.Conv2d``'s path."""
        if self.training and self.weight.requires_grad and torch.is_grad_enabled() and use_gemm_weight_grad(x):
            return conv3x3_gemm_grad(x, self.weight)
        return super().forward(x)


# Activations of the conv groups: airbench's GELU, or SiLU as in Hiverge's 2025 CIFAR-10 speedrun
# record (github.com/hiverge/cifar10-speedrun), which keeps GELU after the stem.
GROUP_ACTIVATIONS = {"gelu": nn.GELU, "silu": nn.SiLU}


class ConvGroup(nn.Module):
    """conv -> maxpool(2) -> BN -> act, then ``depth`` x (conv -> BN -> act), optional skip."""

    def __init__(self, cin: int, cout: int, depth: int = 1, residual: bool = False, bn_momentum: float = 0.4,
                 act: str = "gelu"):
        super().__init__()
        self.conv1 = DiracConv(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBatchNorm(cout, bn_momentum)
        self.convs = nn.ModuleList(DiracConv(cout, cout) for _ in range(depth))
        self.norms = nn.ModuleList(FrozenScaleBatchNorm(cout, bn_momentum) for _ in range(depth))
        self.act = GROUP_ACTIVATIONS[act]()
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        skip = x
        for conv, norm in zip(self.convs, self.norms):
            x = self.act(norm(conv(x)))
        return x + skip if self.residual else x


class ScaledLinear(nn.Linear):
    """Bias-free linear layer whose output is divided by its input width (airbench's logit scale).

    Keeping the scale inside the classifier module makes ``get_classifier()(pooled_features)`` the
    logits, as for timm models (the feature cache and linear probes rely on it).
    """

    def __init__(self, in_features: int, out_features: int):
        super().__init__(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) / self.in_features


class AirbenchNet(nn.Module):
    """Airbench-style CNN with timm's model interface.

    Input: float (B, 3, 32, 32) normalized images (other sizes work; the head pools globally).
    Output: float logits (B, num_classes).

    Args:
        num_classes: classifier outputs.
        widths: channels of the three conv groups.
        depth: convs per group after the first (1 = airbench94, 2 = airbench96-style).
        residual: skip connection around those convs.
        whiten_kernel: side of the patch-whitening stem filters (2 in airbench).
        bn_momentum: running-statistics momentum of the BatchNorms, in torch's convention.
        act: activation of the conv groups, ``gelu`` (airbench) or ``silu`` (Hiverge); the stem keeps GELU.
        scale: logits are divided by this (default: the feature width, as airbench).
    """

    def __init__(self, num_classes: int = 10, widths=(64, 256, 256), depth: int = 1, residual: bool = False,
                 whiten_kernel: int = 2, bn_momentum: float = 0.4, in_chans: int = 3, act: str = "gelu"):
        super().__init__()
        widths = list(widths)
        if len(widths) != 3 or min(widths) <= 0:
            raise ConfigError(f"model_kwargs widths must be three positive integers, e.g. {{widths: [64, 256, 256]}} (got {widths}).")
        if act not in GROUP_ACTIVATIONS:
            raise ConfigError(f"model_kwargs act must be one of {', '.join(GROUP_ACTIVATIONS)} (got {act!r}).")
        self.whiten_width = 2 * in_chans * whiten_kernel ** 2
        self.whiten = nn.Conv2d(in_chans, self.whiten_width, whiten_kernel, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)
        self.act = nn.GELU()
        chans = [self.whiten_width, *widths]
        self.groups = nn.Sequential(*[ConvGroup(chans[i], chans[i + 1], depth, residual, bn_momentum, act)
                                      for i in range(3)])
        self.num_features = widths[-1]
        self.num_classes = num_classes
        self.head = ScaledLinear(self.num_features, num_classes)
        self._init_head()

    def _init_head(self):
        with torch.no_grad():
            w = self.head.weight
            w.mul_(1 / w.std().clamp_min(1e-12))  # unit-std logits at init (airbench94_muon)

    def step_hook(self, bias_steps: int):
        """airbench's stem-bias schedule as the training loop's per-step hook: call ``hook.start()``
        before the optimizers are built (the bias trainable, whatever an earlier run left), then
        ``hook(step)`` before each optimizer step: the bias trains for the first ``bias_steps`` steps
        and is frozen after (``requires_grad`` off: no gradient, skipped by the optimizers)."""
        return StemBiasSchedule(self.whiten.bias, bias_steps)

    # ---- timm-style interface
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = ScaledLinear(self.num_features, num_classes)
        self._init_head()

    def group_matcher(self, coarse: bool = False) -> dict:
        """Layer groups for discriminative learning rates (timm's format): stem, then each conv group."""
        return {"stem": r"^whiten", "blocks": r"^groups\.(\d+)"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> feature map (B, num_features, H/8-ish, W/8-ish)."""
        x = self.act(self.whiten(x))
        return self.groups(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.amax(x, dim=(2, 3))  # global max pool (airbench: MaxPool2d(3) on a 3x3 map)
        if pre_logits:
            return x
        return self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # ---- data-dependent init
    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the stem to whiten patches of ``images`` (float (N, 3, H, W), normalized).

        The filters are the eigenvectors of the patch covariance scaled by 1/sqrt(eigenvalue + eps),
        stacked with their negatives (so GELU keeps both signs). airbench uses 5 000 images.
        """
        k = self.whiten.weight.shape[-1]
        c = images.shape[1]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)           # N, C, H', W', k, k
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)
        cov = patches.T @ patches / len(patches)
        evals, evecs = torch.linalg.eigh(cov.double())
        evals, evecs = evals.flip(0).float(), evecs.flip(1).float()
        filters = (evecs.T / torch.sqrt(evals.clamp_min(0) + eps).view(-1, 1)).reshape(-1, c, k, k)
        self.whiten.weight.copy_(torch.cat([filters, -filters]))
