"""What every recipe shares: a list of steps run in order, each skipped when its output exists.

A recipe is a subclass of :class:`Recipe` naming its ``steps`` and implementing
``step_NAME() -> bool`` for each (True: it did work). Every step uses the project's own
commands and APIs and writes under the recipe's folder; an interrupted recipe resumes by
running the same command again (training stages resume from their newest checkpoint, and
start again when an input they learnt from has changed).
``recipe.json`` records the scale of every invocation and the wall time of every step.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from ..config import atomic_write_text, make_folder
from ..errors import ConfigError

#: stage configs of the recipes (a source checkout: configs/ sits beside the package)
CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "recipe"


def fingerprint(path: Path) -> list[Any]:
    """What an output made from ``path`` depends on: the files under ``path`` (or ``path`` itself)
    with size and modification time, so that a checkpoint trained again under the same name, or
    a data folder prepared again, reads as another input."""
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def latest_checkpoint(run_dir: Path) -> Path | None:
    from ..training.checkpoint import complete_checkpoints

    found = complete_checkpoints(run_dir / "checkpoints")
    return found[-1] if found else None


class Recipe:
    """The driver of a recipe's steps (see the module docstring)."""

    #: the recipe's name (``mmldm recipe NAME``)
    name: ClassVar[str]
    #: its steps, in order
    steps: ClassVar[tuple[str, ...]]
    #: the folder of its stage configs (``STAGE.yaml``)
    config_dir: ClassVar[Path]
    #: the steps that train, and the stage each runs (``mmldm train STAGE`` with ``STAGE.yaml``)
    trained: ClassVar[dict[str, str]] = {}

    def __init__(self, out: Path, scale: Any, progress: bool = True):
        self.out = Path(out)
        self.scale = scale
        self.progress = progress
        self.record_path = self.out / "recipe.json"

    def run(self, steps: tuple[str, ...] | list[str] | None = None) -> None:
        steps = tuple(steps or self.steps)
        unknown = [step for step in steps if step not in self.steps]
        if unknown:
            raise ConfigError(f"recipe {self.name}: unknown step(s) {', '.join(unknown)} "
                              f"(steps: {', '.join(self.steps)})")
        needed = sorted({self.trained[step] for step in steps if step in self.trained})
        missing = [f"{config}.yaml" for config in needed if not (self.config_dir / f"{config}.yaml").is_file()]
        if missing:  # e.g. a wheel install: the recipe's configs live in the source tree
            raise ConfigError(f"recipe {self.name}: its configs {', '.join(missing)} are not in {self.config_dir}; "
                              "its training steps run from a source checkout of mmldm (pip install -e .)")
        make_folder(self.out)
        # one entry per invocation that did something: the scale it ran with (overrides included)
        invocation: dict[str, Any] = {"scale": dataclasses.asdict(self.scale), "steps_done": [],
                                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "id": uuid.uuid4().hex}
        for step in self.steps:
            if step not in steps:
                continue
            print(f"recipe: {step} ...", flush=True)
            start = time.perf_counter()
            done = getattr(self, f"step_{step}")()
            seconds = time.perf_counter() - start
            if done:  # a step that found its output already there keeps its first wall time
                invocation["steps_done"].append(step)
                self._note_step(step, seconds, invocation)
            print(f"recipe: {step} {'done' if done else 'already there, skipped'} ({seconds:.1f}s)", flush=True)

    def _note_step(self, step: str, seconds: float, invocation: dict[str, Any]) -> None:
        """Write a finished step into ``recipe.json``, read afresh under a lock: recipes run side by
        side on one folder (the autoencoder and its ablation) keep each other's entries."""
        from filelock import FileLock

        with FileLock(self.record_path.with_name(self.record_path.name + ".lock")):
            record = self._record()
            record.setdefault("wall_seconds", {})[step] = round(seconds, 1)
            invocations = record.setdefault("invocations", [])
            mine = [i for i, entry in enumerate(invocations) if entry.get("id") == invocation["id"]]
            if mine:
                invocations[mine[0]] = invocation
            else:
                invocations.append(invocation)
            atomic_write_text(self.record_path, json.dumps(record, indent=2) + "\n")

    def _record(self) -> dict[str, Any]:
        if self.record_path.is_file():
            return json.loads(self.record_path.read_text())
        return {"recipe": self.name}

    def _quiet(self) -> list[str]:
        """The option that turns a command's progress bar off when the recipe runs without them."""
        return [] if self.progress else ["--no-progress"]

    def _cli(self, *argv: str) -> None:
        from ..cli.main import main

        code = main(list(argv))
        if code:
            raise ConfigError(f"recipe: `mmldm {' '.join(argv)}` failed (exit {code})")

    # ------------------------------------------------------------------ training

    def _train(self, step: str, steps: int, settings: list[str], sources: tuple[Path, ...],
               run: str | None = None) -> bool:
        """``mmldm train`` of the stage behind ``step`` (its config ``trained[step]``) into
        ``runs/RUN`` (default: the stage's name) up to ``steps`` (resuming); False when already
        trained that far. ``sources`` are the inputs the run learns from (a data folder, the
        checkpoint of the stage before): a run stamped with other sources learnt from inputs that
        have changed since (an upstream stage trained further) and is trained again from scratch."""
        stage = self.trained[step]
        run_dir = self.out / "runs" / (run or stage)
        stamp = self._stamp_path(run_dir)
        if run_dir.exists() and stamp.is_file() and stamp.read_text() != self._stamp_text(sources):
            print(f"recipe: {run_dir} learnt from inputs that have changed since; training it again", flush=True)
            shutil.rmtree(run_dir)
        # stamped before training, so that a run interrupted half-way resumes only on the same
        # inputs; a run without a stamp (made before runs had stamps) is taken as made from them
        self._stamp(run_dir, *sources)
        latest = latest_checkpoint(run_dir)
        if latest is not None and int(latest.name.split("_")[-1]) >= steps:
            return False
        if getattr(self.scale, "batch_size", None) is not None:
            settings = [*settings, f"train.batch_size={self.scale.batch_size}"]
        settings = [*settings, f"train.log.progress_bar={str(self.progress).lower()}"]
        self._cli("train", stage, "--config", str(self.config_dir / f"{self.trained[step]}.yaml"), "--set",
                  *settings, "--out", str(run_dir), "--resume", "auto", "--max-steps", str(steps))
        return True

    def _stamp_path(self, output: Path) -> Path:
        return output.parent / f"{output.name}.source"

    def _up_to_date(self, output: Path, *sources: Path) -> bool:
        """Whether ``output`` exists and was made from ``sources`` (a checkpoint, a data folder);
        a stale output is removed (its upstream stage trained further, or it was made from other
        data) so the step makes it again."""
        stamp = self._stamp_path(output)
        if output.exists() and stamp.is_file() and stamp.read_text() == self._stamp_text(sources):
            return True
        if output.exists():
            shutil.rmtree(output)
        return False

    def _stamp_text(self, sources: tuple[Path, ...]) -> str:
        return json.dumps([fingerprint(source) for source in sources]) + "\n"

    def _stamp(self, output: Path, *sources: Path) -> None:
        atomic_write_text(self._stamp_path(output), self._stamp_text(sources))

    def _need(self, path: Path, what: str) -> Path:
        if not path.exists():
            raise ConfigError(f"recipe: {path} is missing ({what}); run the earlier steps first")
        return path

    def _checkpoint(self, run: str) -> Path:
        latest = latest_checkpoint(self.out / "runs" / run)
        if latest is None:
            step = next((name for name, stage in self.trained.items() if stage == run), run.replace("-", "_"))
            raise ConfigError(f"recipe: no checkpoint under {self.out / 'runs' / run}; run step {step}")
        return latest
