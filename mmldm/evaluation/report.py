"""The Sounding Shapes evaluation as a markdown table (the recipe's ``eval/results.md``)."""

from __future__ import annotations

from typing import Any


def results_table(results: dict[str, Any]) -> str:
    """The evaluation as markdown: each task beside the real-data and shuffled-pair baselines,
    the long-video checks and the reconstruction ceiling."""
    def row(name: str, m: dict[str, Any]) -> str:
        return (f"| {name} | {m['clips']} | {m['sync_error_median']:.2f} | {m['sync_error_within_1_semitone_pct']:.1f} "
                f"| {m['class_agreement_pct']:.1f} | {m['one_object_pct']:.1f} |")

    lines = ["| clips | n | median sync error (semitones) | within 1 semitone % | class agreement % | "
             "one-object frames % |", "|---|---|---|---|---|---|"]
    first = next(task for task in ("svg", "a2v", "v2a") if task in results)
    lines.append(row("real test clips", results[first]["reference"]))
    lines.append(row("shuffled real pairs", results[first]["shuffled_pairs"]))
    for task in ("svg", "a2v", "v2a"):
        if task in results:
            lines.append(row(f"generated {task}", results[task]["generated"]))
    for stage, measures in results.get("reconstruction_ceiling", {}).items():
        lines.append(row(f"real clips through the {stage}", measures))
    long = results.get("long")
    if long:
        lines += ["", f"Long ({long['clips']} videos): sync error of the worst whole video "
                      f"{long['sync_error_max_clip']:.2f}; per 1.6 s window: median "
                      f"{long['sync_error_median']:.2f}, worst {long['sync_error_max_window']:.2f} semitones, "
                      f"{long['windows_within_1_semitone_pct']:.1f} % within 1; median of the k-th window "
                      f"over the videos {', '.join(f'{e:.2f}' for e in long['sync_error_median_per_position'])}; "
                      f"largest audio jump at a seam {long['seam_jump_max']:.3f} vs inside clips "
                      f"{long['inside_jump_max']:.3f}."]
    return "\n".join(lines) + "\n"


__all__ = ["results_table"]
