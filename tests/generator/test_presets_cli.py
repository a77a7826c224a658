import json

import pytest

from mmldm.cli.main import main
from mmldm.generator.complexity import complexity, markdown_table
from mmldm.generator.dit import PAPER_TABLE4, DiTConfig


def test_paper_gflops_are_linear_layer_multiply_adds():
    """Table 4's S figure (34 GFLOPs) is the linear layers' multiply-adds at 399 tokens."""
    counts = complexity(DiTConfig.preset("S"), "S")
    assert abs(counts.linear_macs / 1e9 - PAPER_TABLE4["S"]["gflops"]) / PAPER_TABLE4["S"]["gflops"] < 0.05
    # the full count includes attention and counts a multiply-add as 2
    assert counts.flops > 2 * counts.linear_macs
    width, tokens, depth = 768, 399, 12
    per_block_linear = tokens * 12 * width * width  # qkv 3D^2 + proj D^2 + MLP 8D^2 per token
    assert counts.linear_macs == pytest.approx(depth * per_block_linear, rel=0.01)


def test_presets_command_prints_table_and_json(capsys):
    assert main(["presets", "tiny"]) == 0
    table = capsys.readouterr().out
    assert table.startswith("| preset |") and "| tiny | 4 | 128 | 4 | 86 |" in table
    assert main(["presets", "--json", "tiny"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["tiny"] and rows[0]["params"] > 1e6 and rows[0]["flops"] > 0
    assert main(["presets", "XXL"]) == 2
    assert "unknown DiT preset 'XXL'" in capsys.readouterr().err


def test_markdown_table_shows_paper_figures():
    row = complexity(DiTConfig.preset("tiny"), "S")  # any counts, named S to get the paper columns
    assert "| 131 |" in markdown_table([row]) and "| 34 |" in markdown_table([row])
