"""Subprocess of the latent cache kill test: ``python cache_kill_worker.py OUT_DIR [DELAY_S]``.

Writes a latent cache of 24 toy items in shards of 4 with a deterministic encoder;
``DELAY_S`` makes each batch slow so that the parent can ``kill -9`` it mid-shard.
"""

import sys
import time

import torch
from torch.utils.data import Dataset

from mmldm.data.latent_cache import write_latent_cache


class Items(Dataset):
    def __len__(self):
        return 24

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return {"x": torch.randn(3, 4, generator=g), "source": f"clip_{i:02d}.mp4", "start_time": 0.0,
                "class_id": i % 3, "index": i}


def main() -> None:
    torch.set_num_threads(1)
    out_dir, delay = sys.argv[1], float(sys.argv[2]) if len(sys.argv) > 2 else 0.0
    weight = torch.randn(4, 5, generator=torch.Generator().manual_seed(123))

    def encode(batch):
        time.sleep(delay)
        return {"z": torch.tanh(batch["x"] @ weight)}

    write_latent_cache(Items(), encode, out_dir, {"encoder": "toy-tanh"}, shard_size=4, batch_size=2)


if __name__ == "__main__":
    main()
