"""An embedded synthetic dataset in exactly the MTG-Jamendo mood/theme formats.

The real mel-spectrograms (68 GB) are not reachable from where the project is
developed and tested, so the default study, the tests and new users run on a
generated stand-in that the real loaders read unchanged: the repository layout
(split TSVs with CRLF line ends like the real ones, the 56 real tag names in
their official order), `NN/ID.npy` float32 (96, n_frames) dB arrays at
46.875 frames/s, five official splits (`split-0` .. `split-4`) of the same
tracks, each an artist-disjoint 60/20/20 train/validation/test, whose test
parts together cover every track once, and the real long tail of tag
frequencies (the per-tag counts of split-0 train, scaled down).

The audio is a toy world, learnable but not trivially: every tag plants its
own spectro-temporal signature in each track it labels, over a music bed,
with a little label noise. Equal arguments give byte-identical files,
whatever the number of worker processes.

`catalogue` draws the metadata, `render` the mel-spectrograms, `write`
writes a dataset folder and keeps the project's cached one, and `command`
is the command line:

    python -m mer_models.synthetic --out DIR [--tracks N] [--seed S] [--workers W]
"""

from mer_models.data.synthetic.catalogue import PART_SHARES, SPLITS
from mer_models.data.synthetic.write import (
    MARKER,
    synthetic_dataset,
    synthetic_paths,
    write_synthetic,
)

__all__ = [
    "MARKER",
    "PART_SHARES",
    "SPLITS",
    "synthetic_paths",
    "synthetic_dataset",
    "write_synthetic",
]
