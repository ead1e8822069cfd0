"""The cells of the paper's tables: which model configuration fills which table entry.

A *cell* is one model configuration, trained once per seed. Tables share cells wherever the paper's
own setup says two entries are the same model (Table 1's A+V-att is Table 2's late Concat, since
Table 1's audio-visual models "all fuse features by concatenating the outputs of LSTMs"; the
supplement's V / V-att rows reuse Table 1's), so nothing is trained twice.

Table 2's fusion methods all sit on A+V-att: the paper fuses the audio feature with the *attended*
visual feature ("early fusion methods directly fuse audio features ... and attended visual
features"), and its late Concat entry equals Table 1's A+V-att (72.7).
"""

from __future__ import annotations

from dataclasses import dataclass

from avel.report import paper

# Table 2's column names -> fusion registry names (avel.models.fusion.FUSIONS). DMRFE is a model.
FUSION_NAMES: dict[str, str] = {
    "Additive": "additive", "MP": "mp", "Gated": "gated", "MB": "mb", "GMU": "gmu", "GMB": "gmb",
    "Concat": "concat", "MRN": "mrn", "DMRN": "dmrn",
}
FUSION_BASE_MODEL = "A+V-att"  # the model Table 2's fusion methods are plugged into
DEFAULT_FUSION = ("concat", "late")  # the fusion of Table 1's audio-visual models
TABLE1_MODELS: tuple[str, ...] = ("A", "V", "V-att", "A+V", "A+V-att")
LATER_MODELS: tuple[str, ...] = ("CMRAN", "PSP", "CMBS")  # the later methods (docs/models.md), named as Table 1's
SUPP3_MODELS: tuple[str, ...] = ("A'", "A'-att", "V", "V-att", "A'+V", "A'+V-co-att")
AUDIO_MAP_MODELS = frozenset({"A'", "A'-att", "A'+V", "A'+V-co-att"})  # need ds.audio_map


@dataclass(frozen=True)
class Cell:
    """One model configuration of the reproduction, trained once per seed."""

    key: str  # unique id and display name, e.g. "A+V-att", "W-V", "A+V-att gmu early"
    model: str  # registry name (avel.models.registry)
    fusion: str | None = None  # fusion registry name, None = the model's default
    fusion_stage: str | None = None  # early | late | decision, None = the model's default
    weak: bool = False  # weakly supervised (MIL) variant

    @property
    def needs_audio_map(self) -> bool:
        return self.model in AUDIO_MAP_MODELS

    @property
    def slug(self) -> str:
        """A directory name for the cell: the key with shell-unfriendly characters spelled out."""
        return self.key.replace("'", "p").replace(" ", "_")

    def model_kwargs(self) -> dict:
        """Keyword arguments for avel.models.registry.ModelConfig."""
        kw: dict = {"name": self.model, "weak": self.weak}
        if self.fusion is not None:
            kw["fusion"] = self.fusion
        if self.fusion_stage is not None:
            kw["fusion_stage"] = self.fusion_stage
        return kw


def table1_cell(model: str, weak: bool = False) -> Cell:
    return Cell(key=("W-" if weak else "") + model, model=model, weak=weak)


def table2_cell(method: str, stage: str) -> Cell:
    """The cell for one Table 2 entry (paper method name, stage)."""
    if method == "DMRFE":
        if stage != "late":
            raise ValueError("DMRFE exists only as late fusion")
        return Cell(key="DMRFE", model="DMRFE", fusion_stage="late")
    fusion = FUSION_NAMES[method]
    if (fusion, stage) == DEFAULT_FUSION:
        return table1_cell(FUSION_BASE_MODEL)
    return Cell(key=f"{FUSION_BASE_MODEL} {fusion} {stage}", model=FUSION_BASE_MODEL, fusion=fusion, fusion_stage=stage)


def table2_entries() -> list[tuple[str, str, Cell]]:
    """(stage, paper method, cell) for Table 2's 28 entries, in the paper's order."""
    return [(stage, method, table2_cell(method, stage))
            for stage in paper.TABLE2_STAGES for method in paper.TABLE2_METHODS
            if method in paper.TABLE2[stage]]


EDTCN_CELL = Cell(key="ED-TCN", model="ED-TCN")

# The later methods (avel/models/cmran.py, psp.py, cmbs.py), supervised and weak.
LATER_METHODS: tuple[str, ...] = ("CMRAN", "PSP", "CMBS")


def sota_rows() -> list[tuple[str, Cell]]:
    """(row label, cell) of the table comparing the paper's models with the later methods: supervised
    A+V-att, DMRN, CMRAN, PSP, CMBS, then W-A+V-att, W-CMRAN, W-PSP, W-CMBS. DMRN is Table 2's late
    DMRN cell (the registry's `DMRN` is that network), so a full reproduction trains it once. The paper
    has no weakly supervised DMRN (its Table 1 lists W- models up to W-A+V-att, Table 2 is supervised),
    so there is no W-DMRN row."""
    rows = [("A+V-att", table1_cell("A+V-att")), ("DMRN", table2_cell("DMRN", "late"))]
    rows += [(m, table1_cell(m)) for m in LATER_METHODS]
    rows += [("W-A+V-att", table1_cell("A+V-att", weak=True))]
    rows += [(f"W-{m}", table1_cell(m, weak=True)) for m in LATER_METHODS]
    return rows


# Report sections, in the order `--only` / `--tables` lists them and the report shows them.
SECTIONS: tuple[str, ...] = ("table1", "table2", "supp_table1", "supp_table3", "edtcn", "table3", "sota")


def section_cells(section: str) -> list[Cell]:
    """The training cells a report section needs (table3 trains its own cross-modal models)."""
    builders = {
        "table1": lambda: [table1_cell(m, weak) for weak in (False, True) for m in TABLE1_MODELS],
        "table2": lambda: [c for _, _, c in table2_entries()],
        "supp_table1": lambda: [table1_cell(m) for m in ("A", "V", "A+V", "A+V-att")],
        "supp_table3": lambda: [table1_cell(m) for m in SUPP3_MODELS],
        "edtcn": lambda: [EDTCN_CELL, table1_cell("V")],
        "table3": lambda: [],
        "sota": lambda: [c for _, c in sota_rows()],
    }
    return builders[section]()


def cells_for(sections: list[str] | tuple[str, ...], audio_maps: bool) -> list[Cell]:
    """Every distinct cell the chosen sections need, in report order; audio-map models only when
    the data has audio maps."""
    out: dict[str, Cell] = {}
    for s in sections:
        for c in section_cells(s):
            if c.needs_audio_map and not audio_maps:
                continue
            prev = out.setdefault(c.key, c)
            if prev != c:
                raise AssertionError(f"cell key {c.key!r} names two configurations: {prev} and {c}")
    return list(out.values())
