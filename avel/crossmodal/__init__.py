"""Cross-modality localization (Section 5, Table 3): AVDLN, DCCA, sliding-window A2V / V2A.

Modules: models (AVDLN, DCCA, CrossModalConfig), losses (contrastive, CCA), pairs (training pair
sampling), localize (eq. 8 and the evaluation protocol), evaluate, train (resumable training with
model selection on the validation match split), checkpoint (run directories), keras_import (the
authors' trained weights), table3 (`run_table3` for `avel reproduce`).
"""

from avel.crossmodal.table3 import PAPER_TABLE3, run_table3

__all__ = ["PAPER_TABLE3", "run_table3"]
