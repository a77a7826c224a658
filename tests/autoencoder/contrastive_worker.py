"""Run by torchrun (2 processes, gloo): the contrastive loss with features gathered across processes.

Each rank takes its half of a fixed batch, computes the loss and the gradient with
respect to its own tokens, and writes them to OUT/rank_<r>.safetensors.
"""

import sys

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from mmldm.autoencoder.config import SemanticConfig
from mmldm.autoencoder.semantic import ContrastiveHead


def main(out: str) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)  # same head on both ranks
    head = ContrastiveHead(SemanticConfig(dim=8, contrastive_dim=4))
    g = torch.Generator().manual_seed(1)
    video, audio = torch.randn(6, 4, 8, generator=g), torch.randn(6, 4, 8, generator=g)
    local_video = video[rank * 3:(rank + 1) * 3].clone().requires_grad_(True)
    local_audio = audio[rank * 3:(rank + 1) * 3].clone().requires_grad_(True)
    loss = head(local_video, local_audio)
    loss.backward()
    save_file({"loss": loss.detach()[None], "grad_video": local_video.grad}, f"{out}/rank_{rank}.safetensors")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
