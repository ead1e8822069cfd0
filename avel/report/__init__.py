"""`avel reproduce`'s machinery: the paper's numbers (paper), table cells (cells), the resumable
runner (runner), results.json (results), report.md (markdown), figures (figures, draw), and the
orchestration (pipeline)."""
