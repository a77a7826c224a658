"""A README contact sheet: generated clips beside real clips, each as frames over its spectrogram.

    python scripts/contact_sheet.py --model bbb --real runs/bbb/eval/baseline-real --out docs/images/bbb-samples.png

Generates ``--n`` svg clips with the model's defaults (seeds ``--seed`` ..), takes the first
``--n`` real clips of ``--real`` (sorted by name), and draws every clip as ``mmldm data inspect``
does (8 frames spread over the clip above the mel spectrogram of its sound): generated clips
in the left column, real ones in the right.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image


def sheet_rows(videos: list[Path], scratch: Path) -> np.ndarray:
    from mmldm.data.inspect import write_contact_sheet
    from mmldm.data.media_io import probe

    cells = []
    for path in videos:
        out = write_contact_sheet(path, probe(path), scratch / f"{path.parent.name}-{path.stem}.png")
        with Image.open(out) as image:
            cells.append(np.asarray(image.convert("RGB")))
    return np.concatenate(cells, axis=0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model folder or shipped model name (default: built-in)")
    parser.add_argument("--real", type=Path, required=True, help="a folder of real clips (mp4)")
    parser.add_argument("--n", type=int, default=4, help="clips per column (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first generated clip (default 0)")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    args = parser.parse_args()

    from mmldm.errors import MMLDMError
    from mmldm.pipeline import SoundingVideoPipeline

    try:
        real = sorted(args.real.glob("*.mp4"))[: args.n]
        if len(real) < args.n:
            raise MMLDMError(f"{args.real}: {len(real)} mp4 clips, {args.n} needed")
        with tempfile.TemporaryDirectory() as scratch:
            generated_dir = Path(scratch) / "generated"
            pipe = SoundingVideoPipeline.from_pretrained(args.model)
            generated = pipe.generate("svg", n=args.n, seed=args.seed, progress=False).save(generated_dir,
                                                                                           preview=False)
            left, right = sheet_rows(generated, Path(scratch)), sheet_rows(real, Path(scratch))
            gap = np.full((left.shape[0], 16, 3), 255, np.uint8)
            args.out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.concatenate([left, gap, right], axis=1)).save(args.out)
    except MMLDMError as exc:
        print(f"contact_sheet: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
