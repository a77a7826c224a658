"""Latent cache: sharded writing, resume after a kill, several ranks, reading back."""

import json

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from mmldm.data.latent_cache import (
    INDEX_NAME,
    LatentCacheDataset,
    config_hash,
    finalize_latent_cache,
    module_digest,
    write_latent_cache,
)
from mmldm.errors import DataError
from mmldm.vae.kl_vae import KLVAE


class ToyClips(Dataset):
    """Items shaped like VideoFolderDataset's, generated from the index (seeded)."""

    def __init__(self, n: int, frames: int = 2, size: int = 16):
        self.n, self.frames, self.size = n, frames, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(1000 + i)
        return {
            "frames": torch.rand(self.frames, 3, self.size, self.size, generator=g) * 2 - 1,
            "audio_image": torch.rand(3, self.size, self.size, generator=g) * 2 - 1,
            "source": f"clips/clip_{i:03d}.mp4",
            "start_time": 0.25 * i,
            "class_id": i % 3,
            "index": i,
        }


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return KLVAE.from_preset("tiny", chunk_size=4).eval()


def make_encoder(vae):
    def encode(batch):
        return {"frames": vae.encode_frames(batch["frames"]), "audio_image": vae.encode_audio_image(batch["audio_image"])}
    return encode


CONFIG = {"vae": "tiny-random", "data": "toy"}


def read_all(directory):
    data = LatentCacheDataset(directory)
    return [data[i] for i in range(len(data))]


def assert_same_items(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for key in x:
            if isinstance(x[key], torch.Tensor):
                assert torch.equal(x[key], y[key]), key
            else:
                assert x[key] == y[key], key


def test_cache_reads_back_what_the_encoder_gives(vae, tmp_path):
    data = ToyClips(7)
    stats = write_latent_cache(data, make_encoder(vae), tmp_path / "c", CONFIG, shard_size=3, batch_size=2)
    assert stats.index_written and stats.items_encoded == 7 and stats.shards_written == 3
    index = json.loads((tmp_path / "c" / INDEX_NAME).read_text())
    assert index["num_items"] == 7 and len(index["shards"]) == 3
    assert index["keys"]["frames"] == {"shape": [2, 4, 4, 4], "dtype": "float32"}
    assert index["config_hash"] == config_hash(CONFIG)
    cache = LatentCacheDataset(tmp_path / "c")
    with torch.no_grad():
        for i in (0, 4, 6):
            item = data[i]
            direct = vae.encode_frames(item["frames"][None])[0]
            torch.testing.assert_close(cache[i]["frames"], direct, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(cache[i]["audio_image"],
                                       vae.encode_audio_image(item["audio_image"][None])[0], rtol=1e-5, atol=1e-5)
            assert cache[i]["source"] == item["source"] and cache[i]["class_id"] == i % 3
            assert cache[i]["start_time"] == pytest.approx(0.25 * i) and cache[i]["index"] == i


def test_resume_after_kill_equals_uninterrupted_run(vae, tmp_path):
    data = ToyClips(9)
    encoder = make_encoder(vae)
    write_latent_cache(data, encoder, tmp_path / "full", CONFIG, shard_size=2, batch_size=2)

    class Killed(Exception):
        pass

    def kill_after_two(shard):
        if shard == 1:
            raise Killed

    with pytest.raises(Killed):
        write_latent_cache(data, encoder, tmp_path / "resumed", CONFIG, shard_size=2, batch_size=2,
                           on_shard_written=kill_after_two)
    out = tmp_path / "resumed"
    assert not (out / INDEX_NAME).exists()
    assert len(list(out.glob("shard-*.safetensors"))) == 2
    # what a kill during a write leaves behind: a temporary file, and a truncated shard
    (out / ".shard-00002.tmp999").write_bytes(b"partial")
    last = out / "shard-00004-of-00005.safetensors"
    last.write_bytes(b"\0" * 10)

    stats = write_latent_cache(data, encoder, out, CONFIG, shard_size=2, batch_size=2)
    assert stats.shards_skipped == 2 and stats.shards_written == 3 and stats.index_written
    assert not list(out.glob(".shard-*"))
    assert_same_items(read_all(out), read_all(tmp_path / "full"))


def test_ranks_run_one_after_the_other_complete_the_index(vae, tmp_path):
    data = ToyClips(7)
    encoder = make_encoder(vae)
    first = write_latent_cache(data, encoder, tmp_path / "r", CONFIG, shard_size=2, batch_size=2,
                               rank=0, world_size=2)
    assert first.shards_written == 2 and not first.index_written
    with pytest.raises(DataError, match="shard-00001-of-00004"):
        finalize_latent_cache(tmp_path / "r")
    with pytest.raises(DataError, match="no index.json"):
        LatentCacheDataset(tmp_path / "r")
    second = write_latent_cache(data, encoder, tmp_path / "r", CONFIG, shard_size=2, batch_size=2,
                                rank=1, world_size=2)
    assert second.shards_written == 2 and second.index_written
    write_latent_cache(data, encoder, tmp_path / "one", CONFIG, shard_size=2, batch_size=2)
    assert_same_items(read_all(tmp_path / "r"), read_all(tmp_path / "one"))


def test_rank_from_environment(vae, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    stats = write_latent_cache(ToyClips(5), make_encoder(vae), tmp_path / "e", CONFIG, shard_size=1)
    assert stats.shards_written == 2  # shards 1 and 4 of 0..4
    assert sorted(p.name for p in (tmp_path / "e").glob("shard-*")) == [
        "shard-00001-of-00005.safetensors", "shard-00004-of-00005.safetensors"]
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(DataError, match="rank 3"):
        write_latent_cache(ToyClips(5), make_encoder(vae), tmp_path / "e", CONFIG)


def test_other_config_is_refused(vae, tmp_path):
    write_latent_cache(ToyClips(3), make_encoder(vae), tmp_path / "c", CONFIG, shard_size=2)
    with pytest.raises(DataError, match="another config"):
        write_latent_cache(ToyClips(3), make_encoder(vae), tmp_path / "c", {**CONFIG, "vae": "other"})
    with pytest.raises(DataError, match="holds shards of 3 items"):
        write_latent_cache(ToyClips(4), make_encoder(vae), tmp_path / "c", CONFIG, shard_size=2)
    with pytest.raises(DataError, match="was made with config"):
        LatentCacheDataset(tmp_path / "c", expected_config_hash="0" * 16)


def test_store_dtype_and_dataloader_workers(vae, tmp_path):
    write_latent_cache(ToyClips(6), make_encoder(vae), tmp_path / "h", CONFIG, shard_size=4,
                       store_dtype=torch.float16)
    cache = LatentCacheDataset(tmp_path / "h")
    assert cache[5]["frames"].dtype == torch.float16
    seen = []
    for batch in DataLoader(cache, batch_size=2, num_workers=2):
        assert batch["audio_image"].shape == (2, 4, 4, 4)
        seen += batch["index"].tolist()
    assert sorted(seen) == list(range(6))


def test_sounding_shapes_cache_cli_resume_and_read_back(shapes_dir, tmp_path, capsys):
    from mmldm.cli.main import main
    from mmldm.data.datasets import VideoFolderDataset
    from mmldm.timing import AVTiming

    torch.manual_seed(3)
    KLVAE.from_preset("tiny", chunk_size=8).save_pretrained(tmp_path / "vae")
    # the VAE exactly as the command loads it (its chunk size too: convolutions over chunks of
    # another size may round differently), so that both runs compute the same thing
    vae = KLVAE.from_pretrained(tmp_path / "vae").eval()
    common = ["--config", "configs/vae/tiny.yaml", "--vae", str(tmp_path / "vae"), "--split", "all",
              "--shard-size", "4", "--batch-size", "2", "--num-workers", "0",
              "--set", f"data.root={shapes_dir}", "data.size=32"]
    assert main(["cache", "--out", str(tmp_path / "full"), *common]) == 0
    out = capsys.readouterr().out
    assert "cached 9 clips" in out and "clips/s" in out and "index written" in out

    # a run killed after its first shard, then the same command again
    dataset = VideoFolderDataset(shapes_dir, AVTiming(), size=32, split="all")
    index = json.loads((tmp_path / "full" / INDEX_NAME).read_text())

    def kill(shard):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_latent_cache(dataset, vae.encode_clips, tmp_path / "resumed", index["config"], shard_size=4,
                           batch_size=2, on_shard_written=kill)
    assert main(["cache", "--out", str(tmp_path / "resumed"), *common]) == 0
    assert "cached 5 clips (2 shards written, 1 already done)" in capsys.readouterr().out
    full, resumed = read_all(tmp_path / "full"), read_all(tmp_path / "resumed")
    assert_same_items(resumed, full)

    # what was stored is what the VAE gives for the dataset's items
    for i in (0, 8):
        item = dataset[i]
        direct = vae.encode_clips({"frames": item["frames"][None], "audio_image": item["audio_image"][None]})
        torch.testing.assert_close(full[i]["video_latent"], direct["video_latent"][0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(full[i]["audio_latent"], direct["audio_latent"][0], rtol=1e-5, atol=1e-5)
        assert full[i]["source"] == item["source"] and full[i]["class_id"] == item["class_id"]
    assert full[0]["video_latent"].shape == (16, 4, 8, 8)


def test_cache_cli_needs_trained_vae(shapes_dir, tmp_path, capsys):
    from mmldm.cli.main import main

    code = main(["cache", "--config", "configs/vae/tiny.yaml", "--out", str(tmp_path / "c"),
                 "--set", f"data.root={shapes_dir}"])
    assert code != 0 and "--vae" in capsys.readouterr().err


def test_module_digest_follows_the_weights():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2))
    net.register_buffer("scale", torch.tensor(2.0))  # a 0-dim tensor too
    first = module_digest(net)
    assert module_digest(net) == first
    with torch.no_grad():
        net[0].weight[0, 0] += 1e-3
    changed = module_digest(net)
    assert changed != first
    assert module_digest(net.to(torch.bfloat16)) != changed  # Module.to converts in place


def test_resume_after_a_real_kill_9_equals_an_uninterrupted_run(tmp_path):
    """A writer killed with SIGKILL part-way through a shard leaves a cache that resumes to the same bytes."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    worker = Path(__file__).with_name("cache_kill_worker.py")
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([sys.executable, str(worker), str(straight)], check=True, timeout=120)

    child = subprocess.Popen([sys.executable, str(worker), str(killed), "0.2"])
    try:
        deadline = time.monotonic() + 90
        while len(list(killed.glob("shard-*.safetensors"))) < 2:  # two shards done, the third under way
            assert child.poll() is None and time.monotonic() < deadline, "worker ended before it was killed"
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert not (killed / INDEX_NAME).exists()  # an interrupted cache is never marked complete
    with pytest.raises(DataError):
        LatentCacheDataset(killed)

    subprocess.run([sys.executable, str(worker), str(killed)], check=True, timeout=120)
    a, b = read_all(straight), read_all(killed)
    assert len(a) == len(b) == 24
    for x, y in zip(a, b):
        assert torch.equal(x["z"], y["z"]) and x["source"] == y["source"]
    assert not list(killed.glob(".shard-*.tmp*"))
