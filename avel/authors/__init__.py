"""The authors' trained PyTorch networks: safe loading of their whole-module checkpoints and import as runs.

    from avel.authors import import_authors
    import_authors("AV_att.pt", "runs/authors-av-att")   # then: avel evaluate runs/authors-av-att --data DIR

See docs/authors.md: the file formats read, the safety rule, and the networks' exact maths.
"""

from avel.authors.importer import KINDS, Kind, git_blob_sha1, import_authors, read_authors_checkpoint

__all__ = ["KINDS", "Kind", "git_blob_sha1", "import_authors", "read_authors_checkpoint"]
