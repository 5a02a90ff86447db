"""MTG-Jamendo metadata: tag lists, split TSVs and label matrices.

The formats are those of the MTG-Jamendo repository: a tag list of one tag a
line (its order sets the columns of every label and prediction matrix) and
split files with the columns ``TRACK_ID ARTIST_ID ALBUM_ID PATH DURATION
TAGS...``, one tag per trailing column. A real download is read in place:
``metadata`` is a checkout of the repository, ``melspecs`` the folder of
pre-computed mel-spectrograms (``NN/ID.npy``, from the ``PATH`` column).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from mer_models.files import file_identity

PARTS = ("train", "validation", "test")
HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
# Subsets of the MTG-Jamendo repository, by the name in their split files.
SUBSETS = ("moodtheme", "genre", "instrument", "top50tags", "all")
_CACHED_TABLES = 16  # parsed split files a process keeps (`cached_split`)


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names file and row."""


@dataclass(frozen=True)
class DatasetPaths:
    """Where a dataset lives: metadata checkout, split and subset, and its windows.

    Windows come from a melspec folder or from a packed store
    (`mer_models.data.store`), exactly one of the two.
    """

    metadata: Path
    melspecs: Path | None = None
    split: int = 0
    subset: str = "moodtheme"
    store: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", Path(self.metadata).expanduser().resolve())
        if (self.melspecs is None) == (self.store is None):
            raise DataError(
                "a dataset reads its windows from a melspec folder or from a packed store: "
                f"give exactly one (melspecs={self.melspecs}, store={self.store})"
            )
        for name in ("melspecs", "store"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)).expanduser().resolve())
        if self.subset not in SUBSETS:
            raise DataError(f"unknown subset {self.subset!r}; expected one of {', '.join(SUBSETS)}")
        if self.split < 0:
            raise DataError(f"split must be >= 0, got {self.split}")

    def split_file(self, part: str) -> Path:
        if part not in PARTS:
            raise DataError(f"unknown split part {part!r}; expected one of {', '.join(PARTS)}")
        return (
            self.metadata
            / "data"
            / "splits"
            / f"split-{self.split}"
            / f"autotagging_{self.subset}-{part}.tsv"
        )

    def tag_file(self) -> Path:
        return self.metadata / "data" / "tags" / f"{self.subset}_split.txt"

    def on_split(self, split: int) -> DatasetPaths:
        """The same dataset on another of its official splits."""
        return replace(self, split=split)

    def to_dict(self) -> dict:
        return {
            "metadata": str(self.metadata),
            "melspecs": None if self.melspecs is None else str(self.melspecs),
            "split": self.split,
            "subset": self.subset,
            "store": None if self.store is None else str(self.store),
        }

    @property
    def windows(self) -> Path:
        """The folder the windows are read from: the store, else the melspec folder."""
        return self.store if self.store is not None else self.melspecs


@dataclass(frozen=True)
class SplitTable:
    """One split file, parsed: rows in file order, label columns in tag order."""

    file: Path
    track_ids: tuple[str, ...]
    melspec_paths: tuple[str, ...]  # relative to the melspec root: NN/ID.npy
    durations: np.ndarray  # float64 seconds, as the file states
    labels: np.ndarray  # bool (n_tracks, n_tags)
    tags: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.track_ids)


def read_text(path: Path) -> str:
    """A metadata file's text; bytes that are not UTF-8 are a DataError naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: byte {data[error.start]:#04x} is not UTF-8 text "
            "(metadata files are UTF-8)"
        ) from None


def read_tags(path: str | Path) -> tuple[str, ...]:
    """The tag list: one tag a line, order preserved, no blanks or duplicates."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: tag list not found (expected one tag a line)")
    tags: list[str] = []
    lines = read_text(path).rstrip("\n").splitlines()
    for number, line in enumerate(lines, start=1):
        tag = line.strip()
        if not tag:
            raise DataError(f"{path}, line {number}: empty line in the tag list")
        if tag in tags:
            raise DataError(f"{path}, line {number}: tag {tag!r} is listed twice")
        tags.append(tag)
    if not tags:
        raise DataError(f"{path}: the tag list is empty")
    return tuple(tags)


def read_split(
    path: str | Path, tags: tuple[str, ...], problems: list[str] | None = None
) -> SplitTable:
    """Parse one MTG-Jamendo split TSV into ids, melspec paths and a label matrix.

    A bad row raises `DataError`; given a `problems` list, bad rows are instead
    described there and skipped, so that a check can report all of them.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: split file not found")
    lines = read_text(path).splitlines()
    if not lines:
        raise DataError(f"{path}: the split file is empty (expected the header {' '.join(HEADER)})")
    header = tuple(lines[0].split("\t"))
    if header != HEADER:
        raise DataError(
            f"{path}, line 1: header is {' '.join(header)!r}; expected the tab-separated "
            f"columns {' '.join(HEADER)}"
        )
    column = {tag: i for i, tag in enumerate(tags)}
    track_ids, melspec_paths, durations, label_rows = [], [], [], []
    seen: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            track_id, melspec_path, seconds, row = _parse_row(path, number, line, column, seen)
        except DataError as error:
            if problems is None:
                raise
            problems.append(str(error))
            continue
        track_ids.append(track_id)
        melspec_paths.append(melspec_path)
        durations.append(seconds)
        label_rows.append(row)
    if not track_ids:
        raise DataError(f"{path}: the split file has no valid tracks")
    return SplitTable(
        file=path,
        track_ids=tuple(track_ids),
        melspec_paths=tuple(melspec_paths),
        durations=np.asarray(durations, dtype=np.float64),
        labels=np.stack(label_rows),
        tags=tags,
    )


def _parse_row(
    path: Path, number: int, line: str, column: dict[str, int], seen: dict[str, int]
) -> tuple[str, str, float, np.ndarray]:
    fields = line.split("\t")
    if len(fields) < 5:
        raise DataError(
            f"{path}, line {number}: {len(fields)} columns; expected TRACK_ID ARTIST_ID "
            f"ALBUM_ID PATH DURATION and at least one tag"
        )
    track_id, _, _, audio_path, duration = fields[:5]
    row_tags = [tag for tag in fields[5:] if tag]
    if not row_tags:
        raise DataError(f"{path}, line {number}: track {track_id} has no tags")
    if track_id in seen:
        raise DataError(
            f"{path}, line {number}: track {track_id} is listed twice (first on line {seen[track_id]})"
        )
    seen[track_id] = number
    try:
        seconds = float(duration)
    except ValueError:
        raise DataError(
            f"{path}, line {number}: DURATION of track {track_id} is {duration!r}; expected seconds"
        ) from None
    row = np.zeros(len(column), dtype=bool)
    for tag in row_tags:
        if tag not in column:
            raise DataError(
                f"{path}, line {number}: track {track_id} has tag {tag!r}, which is not in the "
                f"tag list ({len(column)} tags, e.g. {next(iter(column))!r})"
            )
        row[column[tag]] = True
    return track_id, str(Path(audio_path).with_suffix(".npy")), seconds, row


def label_matrix(split_file: str | Path, tag_file: str | Path) -> np.ndarray:
    """Bool (tracks, tags) ground truth, rows in split order, columns in tag order."""
    return read_split(split_file, read_tags(tag_file)).labels


def load_split(paths: DatasetPaths, part: str) -> SplitTable:
    """One part (train, validation or test) of a dataset, with its tag list."""
    return read_split(paths.split_file(part), read_tags(paths.tag_file()))


def cached_split(paths: DatasetPaths, part: str) -> SplitTable:
    """`load_split`, parsed once per process while its split and tag files stay the same.

    A worker that runs trial after trial reads its dataset's tables once. The
    key is each file's path, inode, size and modification time, so an edited
    or replaced file is parsed again; a file that fails to parse is never
    kept. The cached table's arrays are read-only: every trial shares them.
    """
    split_file, tag_file = paths.split_file(part), paths.tag_file()
    key = (file_identity(split_file), file_identity(tag_file))
    table = _TABLES.get(key)
    if table is None:
        table = load_split(paths, part)
        table.durations.flags.writeable = False
        table.labels.flags.writeable = False
        if len(_TABLES) >= _CACHED_TABLES:
            _TABLES.pop(next(iter(_TABLES)))  # the oldest
        _TABLES[key] = table
    return table


_TABLES: dict[tuple, SplitTable] = {}  # cached_split's tables, oldest first
