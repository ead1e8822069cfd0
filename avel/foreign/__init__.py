"""Foreign trained weights as avel runs: a restricted unpickler (nothing in a file runs), one reader
with a small table per network family (the AVE authors' networks, the later methods), atomic run
directories.

    from avel.foreign import import_run
    import_run("AV_att.pt", "runs/authors-av-att")      # then: avel evaluate runs/authors-av-att --data DIR

See docs/authors.md and docs/models.md: the formats read, the safety rule, each family's key map.
"""

from pathlib import Path

from avel.foreign.kinds import AUTHORS, PEERS, Family, families
from avel.foreign.reader import Checkpoint, git_blob_sha1, import_run, read_checkpoint


def import_authors(path: str | Path, out_dir: str | Path, kind: str | None = None) -> Path:
    """`import_run` limited to the AVE authors' three networks (their pickled class names the kind)."""
    return import_run(path, out_dir, kind, allowed=AUTHORS)


def read_authors_checkpoint(path: str | Path) -> Checkpoint:
    """`read_checkpoint` limited to the AVE authors' three networks."""
    return read_checkpoint(path, allowed=AUTHORS)


__all__ = ["AUTHORS", "PEERS", "Checkpoint", "Family", "families", "git_blob_sha1", "import_authors", "import_run",
           "read_authors_checkpoint", "read_checkpoint"]
