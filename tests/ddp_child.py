"""Run by tests/test_distributed.py under torchrun: :class:`ReplicatedForward` over a small net
without BatchNorm, each rank on its half of one batch, for three backward passes; before the third
the first layer's bias stops training (as airbench's stem bias does). Each rank saves its gradients.

    torchrun --nproc-per-node 2 ddp_child.py SPARE OUT_DIR

SPARE: ``spare`` adds a layer the forward pass never uses; ``none`` does not.
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

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def batch() -> torch.Tensor:
    return torch.randn(8, 6, generator=torch.Generator().manual_seed(1))


def net(spare: bool) -> Net:
    torch.manual_seed(0)
    return Net(spare)


if __name__ == "__main__":
    spare, out = sys.argv[1] == "spare", Path(sys.argv[2])
    env = init()
    model, x = net(spare), batch()
    fwd = ReplicatedForward(model, env)
    grads = []
    for step in range(3):
        model.a.bias.requires_grad_(step < 2)
        fwd(x[4 * env.rank:4 * env.rank + 4]).sum().backward()  # DDP averages: the full batch's sum / 2
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        model.zero_grad(set_to_none=True)
    torch.save({"grads": grads, "find_unused": fwd.find_unused, "unused": fwd.unused}, out / f"rank{env.rank}.pt")
    shutdown(env)
