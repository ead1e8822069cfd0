"""The paper's published numbers, as data (Tian et al., ECCV 2018, and its supplement).

Transcribed once from ../shared/paper/ave_eccv18_paper_with_supplement.txt so that every report
places a measured number beside the published one without anyone typing it by hand. All values are
overall (or per-category) segment accuracy in percent on the AVE test split.
"""

from __future__ import annotations

from avel.data.catalog import SHORT_NAMES

# Main paper, Table 1: supervised and weakly-supervised localization (late fusion by concatenation).
TABLE1: dict[str, float] = {
    "A": 59.5, "V": 55.3, "V-att": 58.6, "A+V": 71.4, "A+V-att": 72.7,
    "W-A": 53.4, "W-V": 52.9, "W-V-att": 55.6, "W-A+V": 63.7, "W-A+V-att": 66.7,
}

# Main paper, Table 2: fusion method (the paper's column name) -> stage -> accuracy.
# DMRFE exists only as late fusion: the paper prints "-" for early and decision.
TABLE2_METHODS: tuple[str, ...] = ("Additive", "MP", "Gated", "MB", "GMU", "GMB", "Concat", "MRN", "DMRN", "DMRFE")
TABLE2_STAGES: tuple[str, ...] = ("early", "late", "decision")
_TABLE2_ROWS: dict[str, tuple[float | None, ...]] = {
    "early": (59.9, 67.9, 67.9, 69.2, 70.5, 70.2, 61.0, 69.8, 68.0, None),
    "late": (71.3, 71.4, 70.5, 70.5, 71.6, 71.0, 72.7, 70.8, 73.1, 73.3),
    "decision": (70.5, 64.5, 65.2, 64.6, 67.6, 67.3, 69.7, 63.8, 70.4, None),
}
TABLE2: dict[str, dict[str, float]] = {
    stage: {m: v for m, v in zip(TABLE2_METHODS, row) if v is not None} for stage, row in _TABLE2_ROWS.items()
}

# Main paper, Table 3: cross-modality localization (exact-match accuracy).
TABLE3: dict[str, dict[str, float]] = {
    "AVDLN": {"A2V": 44.8, "V2A": 35.6},
    "DCCA": {"A2V": 34.8, "V2A": 34.1},
}

# Main paper, Section 6.3: ED-TCN on the V features, against V's 55.3.
EDTCN: float = 46.9

# Supplement, Table 1: per-category accuracy, columns in class-index order (= catalog.SHORT_NAMES).
# Only the rows avel can reproduce: A (audio), Vs (the main paper's V) and AVs (audio + spatial:
# its overall accuracy, 71.4 in supplement Table 2, is the main paper's A+V).
SUPP_TABLE1: dict[str, tuple[float, ...]] = {
    "A": (83.9, 54.1, 49.4, 51.1, 40.0, 36.5, 44.1, 66.1, 81.8, 78.1, 77.8, 20.0, 61.0, 34.4,
          70.6, 65.3, 81.3, 84.4, 53.0, 61.3, 8.3, 68.1, 30.0, 8.3, 70.6, 49.0, 60.7, 64.7),
    "Vs": (76.7, 40.6, 44.1, 68.3, 60.6, 24.7, 50.6, 44.4, 44.7, 17.5, 70.6, 69.2, 40.0, 66.7,
           57.8, 73.5, 79.4, 45.6, 62.0, 51.3, 60.0, 73.1, 23.3, 35.0, 60.6, 42.0, 66.0, 41.3),
    "AVs": (84.4, 57.6, 55.3, 77.2, 56.7, 72.4, 53.5, 80.6, 87.6, 80.0, 80.0, 75.4, 60.0, 68.9,
            63.9, 88.8, 81.3, 76.1, 75.0, 57.5, 41.7, 83.1, 61.7, 33.3, 83.9, 57.0, 74.7, 63.3),
}
SUPP_TABLE1_CATEGORIES: tuple[str, ...] = SHORT_NAMES
# Which of our models each supplement row corresponds to.
SUPP_TABLE1_MODELS: dict[str, str] = {"A": "A", "Vs": "V", "AVs": "A+V"}

# Supplement, Table 3: attention variants (A' = audio from VGGish's last pooling layer, a spatial map).
SUPP_TABLE3: dict[str, float] = {
    "A'": 54.3, "A'-att": 54.1, "V": 55.3, "V-att": 58.5, "A'+V": 70.2, "A'+V-co-att": 69.9,
}

# `avel reproduce --tables sota`: published accuracies of the paper's models and of the later methods
# (segment accuracy, %, on the real AVE test split, each with the checkpoint its authors selected on the
# *test* split). label -> (accuracy, where it is published). The paper's own come from the tables above.
SOTA_PUBLISHED: dict[str, tuple[float, str]] = {
    "A+V-att": (TABLE1["A+V-att"], "Tian et al., ECCV 2018, Table 1"),
    "DMRN": (TABLE2["late"]["DMRN"], "Tian et al., ECCV 2018, Table 2 (late fusion)"),
    "CMRAN": (77.4, "Xu et al., ACM MM 2020, Table 1"),
    "PSP": (77.8, "Zhou et al., CVPR 2021, Table 1"),
    "CMBS": (79.3, "Xia and Zhao, CVPR 2022, Table 1"),
    "W-A+V-att": (TABLE1["W-A+V-att"], "Tian et al., ECCV 2018, Table 1"),
    "W-CMRAN": (72.9, "Xu et al., ACM MM 2020, Table 1"),
    "W-PSP": (73.5, "Zhou et al., CVPR 2021, Table 1"),
    "W-CMBS": (74.2, "Xia and Zhao, CVPR 2022, Table 1"),
}

# The works cited in SOTA_PUBLISHED, and what their code's README says about the numbers (README.md of
# each repository, read at the commit named).
SOTA_REFERENCES: dict[str, str] = {
    "Tian et al., ECCV 2018": "Y. Tian, J. Shi, B. Li, Z. Duan, C. Xu, \"Audio-Visual Event Localization in "
                              "Unconstrained Videos\", ECCV 2018 (Tables 1 and 2).",
    "Xu et al., ACM MM 2020": "H. Xu, R. Zeng, Q. Wu, M. Tan, C. Gan, \"Cross-Modal Relation-Aware Networks for "
                              "Audio-Visual Event Localization\", ACM Multimedia 2020. The README of "
                              "FloretCat/CMRAN (07ba5d3) states no accuracy; the numbers are the paper's.",
    "Zhou et al., CVPR 2021": "J. Zhou, L. Zheng, Y. Zhong, S. Hao, M. Wang, \"Positive Sample Propagation along "
                              "the Audio-Visual Event Line\", CVPR 2021. The README of jasongief/PSP_CVPR_2021 "
                              "(2af5064) states the paper's 77.8% and 73.5% (and 78.0% / 73.9% for its released "
                              "checkpoints).",
    "Xia and Zhao, CVPR 2022": "Y. Xia, Z. Zhao, \"Cross-Modal Background Suppression for Audio-Visual Event "
                               "Localization\", CVPR 2022. The README of marmot-xy/CMBS (010a381) states no "
                               "accuracy; the numbers are the paper's.",
}
