"""Subprocess of the prepare kill test: ``python prepare_kill_worker.py SRC OUT DELAY_S``.

Runs ``prepare`` with the settings of the test; every clip write is slowed by ``DELAY_S`` (half
before the encode, half after the rename) so that the parent can ``kill -9`` it at any point of
a clip's life: before its temporary file, during the encode, between the rename and its
journal line.
"""

import sys
import time

import mmldm.data.prepare as prepare_module
from mmldm.data.prepare import PrepareConfig, prepare

#: the settings the kill test and its uninterrupted reference run share
CONFIG = PrepareConfig(fps=10.0, num_frames=4, size=32, sample_rate=16000, test_fraction=0.25, chunk_seconds=1.2)


def main() -> None:
    src, out, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    real_write = prepare_module.write_av

    def slow_write(*args, **kwargs):
        time.sleep(delay / 2)
        path = real_write(*args, **kwargs)
        time.sleep(delay / 2)
        return path

    prepare_module.write_av = slow_write
    prepare([src], out, CONFIG)


if __name__ == "__main__":
    main()
