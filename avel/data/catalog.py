"""The AVE catalog: Annotations.txt, one annotated event per row.

Format, one line per event: `Category&VideoID&Quality&StartTime&EndTime`, e.g.
`Church bell&RUhOCu3LNXM&good&0&10`. The copy in the official zip starts with that header line;
the copy in the authors' repository does not: both are accepted. The row index (0-based, header
excluded) orders every released h5 file. 4143 rows come from 4097 distinct videos.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from avel.errors import AvelError

NUM_SEGMENTS = 10  # seconds per AVE clip
NUM_EVENT_CLASSES = 28  # event categories
BACKGROUND = 28  # class index of background (no audio-visual event)
NUM_CLASSES = 29  # 28 events + background

# The 28 categories in order of first appearance in the released Annotations.txt (= class index).
AVE_CATEGORIES: tuple[str, ...] = (
    "Church bell", "Male speech, man speaking", "Bark", "Fixed-wing aircraft, airplane",
    "Race car, auto racing", "Female speech, woman speaking", "Helicopter", "Violin, fiddle",
    "Flute", "Ukulele", "Frying (food)", "Truck", "Shofar", "Motorcycle", "Acoustic guitar",
    "Train horn", "Clock", "Banjo", "Goat", "Baby cry, infant cry", "Bus", "Chainsaw", "Cat",
    "Horse", "Toilet flush", "Rodents, rats, mice", "Accordion", "Mandolin",
)
# Short names used by the supplement's per-category table.
SHORT_NAMES: tuple[str, ...] = (
    "bell", "man", "dog", "plane", "car", "woman", "copt.", "violin", "flute", "ukul.", "frying",
    "truck", "shofar", "moto.", "guitar", "train", "clock", "banjo", "goat", "baby", "bus",
    "chain.", "cat", "horse", "toilet", "rodent", "acco.", "mand.",
)
HEADER = "Category&VideoID&Quality&StartTime&EndTime"


@dataclass(frozen=True)
class Annotation:
    """One annotated event: a row of Annotations.txt. Seconds are [start, end)."""

    row: int  # 0-based row index, the key of every released h5 file
    category: str  # category name as written in the file
    video_id: str  # YouTube ID
    quality: str  # "good" in the release
    start: int  # first event second, 0..9
    end: int  # one past the last event second, start+1..10 (start == end == 0: no event, see parse_line)

    @property
    def length(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Catalog:
    """All rows of an annotation file plus the category index they define."""

    rows: tuple[Annotation, ...]
    categories: tuple[str, ...]  # index = class id; background (28) is not listed
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def class_index(self, category: str) -> int:
        try:
            return self.categories.index(category)
        except ValueError:
            raise AvelError(f"unknown category '{category}'", self.path) from None

    @property
    def labels(self) -> list[int]:
        """Class index of each row's event."""
        return [self.categories.index(a.category) for a in self.rows]

    @property
    def video_ids(self) -> list[str]:
        """Distinct video IDs in order of first appearance."""
        return list(dict.fromkeys(a.video_id for a in self.rows))


def parse_line(line: str, lineno: int, path: Path | None, num_segments: int = NUM_SEGMENTS) -> tuple:
    """Parse one `Category&VideoID&Quality&Start&End` line into its fields, or raise naming the line."""
    where = f"line {lineno}"
    parts = line.split("&")
    if len(parts) != 5:
        raise AvelError(f"{where}: expected 5 '&'-separated fields, got {len(parts)}: {line!r}", path)
    category, video_id, quality, start_s, end_s = (p.strip() for p in parts)
    if not category or not video_id:
        raise AvelError(f"{where}: empty category or video ID: {line!r}", path)
    try:
        start, end = int(start_s), int(end_s)
    except ValueError:
        raise AvelError(f"{where}: start/end must be whole seconds, got {start_s!r}, {end_s!r}", path) from None
    if start == end == 0:
        # The released file has one such row (line 27, VWi2ENBuTbw): an event-less row whose
        # released labels_closs row is all zeros. Keep it so row indices stay aligned.
        return category, video_id, quality, start, end
    if not (0 <= start < end <= num_segments):
        raise AvelError(f"{where}: need 0 <= start < end <= {num_segments}, got start={start} end={end}", path)
    return category, video_id, quality, start, end


def read_lines(path: str | Path, num_segments: int = NUM_SEGMENTS) -> list[tuple]:
    """Parse every event line of an Annotations.txt-format file (header and blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise AvelError("file not found", path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise AvelError(f"not a UTF-8 text file: {exc}", path) from None
    out = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or (lineno == 1 and line.replace(" ", "") == HEADER):
            continue
        out.append(parse_line(line, lineno, path, num_segments))
    if not out:
        raise AvelError("no annotation lines", path)
    return out


def read_annotations(path: str | Path, categories: tuple[str, ...] | None = None) -> Catalog:
    """Read Annotations.txt. Categories are indexed by first appearance unless given."""
    path = Path(path)
    fields = read_lines(path)
    if categories is None:
        categories = tuple(dict.fromkeys(f[0] for f in fields))
    if len(categories) > BACKGROUND:
        raise AvelError(f"{len(categories)} categories; at most {BACKGROUND} fit before background", path)
    rows = tuple(Annotation(i, *f) for i, f in enumerate(fields))
    catalog = Catalog(rows=rows, categories=tuple(categories), path=path)
    for a in rows:
        catalog.class_index(a.category)
    return catalog


def format_line(a: Annotation) -> str:
    return f"{a.category}&{a.video_id}&{a.quality}&{a.start}&{a.end}"
