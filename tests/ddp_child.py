"""Run by tests/test_distributed.py under torchrun: :class:`ReplicatedForward` over a small net
without BatchNorm, each rank on its half of one batch, for three backward passes; before the third
the first layer's bias stops training (as airbench's stem bias does). Each rank saves its gradients.

    torchrun --nproc-per-node 2 ddp_child.py MODE OUT_DIR

MODE: ``spare`` adds a layer the forward pass never uses; ``none`` does not; ``skip`` instead
skips the last layer on the third pass only and runs a fourth (which must stop with a clear error).
"""
import sys
from pathlib import Path

import torch
from torch import nn

from cifarlab.training.distributed import ReplicatedForward, init, shutdown


class Net(nn.Module):
    def __init__(self, spare: bool):
        super().__init__()
        self.a, self.b = nn.Linear(6, 5), nn.Linear(5, 3)
        self.spare = nn.Linear(3, 3) if spare else None
        self.skip_b = False

    def forward(self, x):
        h = torch.tanh(self.a(x))
        return h[:, :3] if self.skip_b else self.b(h)


def batch() -> torch.Tensor:
    return torch.randn(8, 6, generator=torch.Generator().manual_seed(1))


def net(spare: bool) -> Net:
    torch.manual_seed(0)
    return Net(spare)


if __name__ == "__main__":
    mode, out = sys.argv[1], Path(sys.argv[2])
    env = init()
    model, x = net(mode == "spare"), batch()
    fwd = ReplicatedForward(model, env)
    grads = []
    for step in range(4 if mode == "skip" else 3):
        model.a.bias.requires_grad_(step < 2 or mode == "skip")
        model.skip_b = mode == "skip" and step == 2
        fwd(x[4 * env.rank:4 * env.rank + 4]).sum().backward()  # DDP averages: the full batch's sum / 2
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    torch.save({"grads": grads, "find_unused": fwd.find_unused, "unused": fwd.unused}, out / f"rank{env.rank}.pt")
    shutdown(env)
