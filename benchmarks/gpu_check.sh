#!/usr/bin/env bash
# Exercise avel on CUDA in both precisions and print the speeds: train (A+V-att on a small AVE-Synth,
# synthetic), extract (VGG-19 + VGGish, random weights, 16 frames/s at 224 px) and localize, each with
# --precision fp32 and --precision bf16 (on a GPU without bf16, `auto` would pick fp16 + a GradScaler:
# the auto line shows what it picks); that --precision int8 is refused on CUDA with one line (exit 2);
# then benchmarks/bench_precision.py --device cuda --quick (its int8 section says int8 is CPU-only) and
# the frames-per-second trade-off, benchmarks/bench_fps.py --device cuda (16/8/4/2 fps: seconds per
# clip and the authors' model's per-second agreement with 16 fps, on 2 rendered 10-s clips).
#
#   bash benchmarks/gpu_check.sh [WORK_DIR]        (PYTHON=path/to/python to choose the interpreter)
#
# Exits 2 with one line when CUDA is absent. Takes a few minutes on one GPU (the bench lines: under 5).
set -euo pipefail

PY=${PYTHON:-.venv/bin/python}
WORK=${1:-$(mktemp -d "${TMPDIR:-/tmp}/avel-gpu-check.XXXXXX")}
AVEL=("$PY" -m avel)

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_check: CUDA is not available here (torch.cuda.is_available() is False): nothing to check" >&2
    exit 2
fi
"$PY" -c 'import torch; print(f"GPU: {torch.cuda.get_device_name()}; bf16 supported: {torch.cuda.is_bf16_supported()}; torch {torch.__version__}")'
mkdir -p "$WORK"
echo "work folder: $WORK"

now() { "$PY" -c 'import time; print(time.time())'; }
elapsed() { "$PY" -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$2"; }
record() {  # FILE KEY: print the recorded precision of a run config / extractor.json / events.json
    "$PY" - "$1" "$2" <<'PYEOF'
import json, sys
doc = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    doc = doc[key]
rec = doc[-1] if isinstance(doc, list) else doc
print(f"{rec['compute']} on {rec['device']} ({rec['reason']})")
PYEOF
}

# inputs: a small AVE-Synth, two rendered 10-s clips, random VGG-19 / VGGish weights
[ -d "$WORK/synth" ] || "${AVEL[@]}" data synth --out "$WORK/synth" --videos 240 --categories 6 >/dev/null
"$PY" - "$WORK" <<'PYEOF'
import sys
from pathlib import Path
from avel.features.render import ClipSpec, render_clip
from avel.features.weights import random_weight_files
work = Path(sys.argv[1])
(work / "videos").mkdir(exist_ok=True)
for i in range(2):
    if not (work / "videos" / f"clip{i}.mp4").is_file():
        render_clip(work / "videos" / f"clip{i}.mp4", ClipSpec(seconds=10, fps=25, width=640, height=360,
                                                            shape_seconds={3, 4, 5}, tone_seconds={3, 4, 5}, seed=i))
random_weight_files(work / "weights")
PYEOF
W=(--vgg19-weights "$WORK/weights/vgg19_random.pth" --vggish-weights "$WORK/weights/vggish_random.pth")

echo "auto picks: $("$PY" -c 'from avel.precision import decide; d = decide("auto", "cuda", announce=False); print(d.compute, "-", d.reason)')"
for p in fp32 bf16; do
    echo "== --precision $p"
    rm -rf "$WORK/run-$p" "$WORK/features-$p" "$WORK/localize-$p"
    t0=$(now)
    "${AVEL[@]}" train --data "$WORK/synth" --model A+V-att --out "$WORK/run-$p" --epochs 3 --device cuda \
        --precision "$p" --quiet
    t1=$(now)
    echo "train (3 epochs, 240 synthetic videos): $(elapsed "$t0" "$t1") s; $(record "$WORK/run-$p/config.json" precision)"
    "$PY" -c "import json; r = json.load(open('$WORK/run-$p/results.json')); print(f\"  test accuracy {r['test']['accuracy']:.2f}% (AVE-Synth, synthetic)\")"
    t0=$(now)
    "${AVEL[@]}" extract --videos "$WORK/videos" --out "$WORK/features-$p" --device cuda --precision "$p" --quiet "${W[@]}"
    t1=$(now)
    echo "extract (2 clips x 10 s, 16 frames/s, 224 px, incl. model load): $(elapsed "$t0" "$t1") s; $(record "$WORK/features-$p/extractor.json" precision)"
    t0=$(now)
    "${AVEL[@]}" localize "$WORK/videos/clip0.mp4" --model "$WORK/run-$p" --out "$WORK/localize-$p" --device cuda \
        --precision "$p" --no-pictures "${W[@]}" >/dev/null
    t1=$(now)
    echo "localize (one 10-s clip, incl. model load): $(elapsed "$t0" "$t1") s; $(record "$WORK/localize-$p/events.json" extractor.precision)"
done

echo "== --precision int8 on CUDA (expected: refused, one line, exit 2)"
set +e
"${AVEL[@]}" extract --videos "$WORK/videos" --out "$WORK/features-int8" --device cuda --precision int8 --quiet "${W[@]}"
echo "exit status $?"
set -e

echo "== benchmarks/bench_precision.py --device cuda --quick"
"$PY" benchmarks/bench_precision.py --device cuda --quick --work-dir "$WORK/bench-precision"
echo "== benchmarks/bench_fps.py --device cuda --clips 2"
"$PY" benchmarks/bench_fps.py --device cuda --clips 2 --work-dir "$WORK/bench-fps"
