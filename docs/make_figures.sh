#!/usr/bin/env bash
# Regenerate the pictures of the README and docs/GETTING_STARTED.md in docs/images/ from the demo's trained RSP-4 (`make demo`).
#
#   bash docs/make_figures.sh [RUN_DIR] [BASELINE_RUN_DIR]
#
# RUN_DIR (default output/demo_rsp4_R18) holds model_final.pth, config.yaml and metrics.json as
# train_net.py writes them. BASELINE_RUN_DIR (optional) is a sum-baseline run of the same demo
# recipe, which the propagation figure and the training curves then show next to RSP-4, e.g.
#   DETECTRON2_DATASETS=datasets/synthetic .venv/bin/python train_net.py \
#       --config-file configs/synthetic/rsp4_R18.yaml \
#       MODEL.SEM_SEG_HEAD.RSP.FUSION '["sum","sum","sum","sum","sum"]' OUTPUT_DIR output/demo_baseline_R18
# The image is the first synthetic Cityscapes val image under $DETECTRON2_DATASETS (default
# datasets/synthetic, where tools/train_demo.py puts it); the pixels of the relation figure are a
# rider, a person and a car of that (seed 0) image.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
RUN=${1:-output/demo_rsp4_R18}
BASELINE=${2:-}
DATA=${DETECTRON2_DATASETS:-datasets/synthetic}
IMAGE=$DATA/cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000019_leftImg8bit.png
OUT=${FIGURES_DIR:-docs/images}  # FIGURES_DIR: elsewhere (the test writes to a temp folder)
MAX_BYTES=300000

fail() { echo "error: $*" >&2; exit 1; }
[ -f "$RUN/model_final.pth" ] || fail "$RUN/model_final.pth not found: run 'make demo' first (or pass the run folder)"
[ -f "$IMAGE" ] || fail "$IMAGE not found: set DETECTRON2_DATASETS to the synthetic data root ('make demo' makes datasets/synthetic)"
# The config the run was trained with (train_net.py dumps it), else the demo's.
CONFIG=$RUN/config.yaml
[ -f "$CONFIG" ] || CONFIG=configs/synthetic/rsp4_R18.yaml
BASELINE_ARGS=()
RUNS=("$RUN")
if [ -n "$BASELINE" ]; then
    [ -f "$BASELINE/model_final.pth" ] && [ -f "$BASELINE/config.yaml" ] \
        || fail "$BASELINE needs model_final.pth and config.yaml"
    BASELINE_ARGS=(--baseline-config "$BASELINE/config.yaml" --baseline-checkpoint "$BASELINE/model_final.pth")
    RUNS+=("$BASELINE")
fi
mkdir -p "$OUT"

# Semantic prediction drawn by the demo (Detectron2's Visualizer.draw_sem_seg).
"$PY" demo/demo.py --config-file "$CONFIG" --input "$IMAGE" --output "$OUT/demo_prediction.jpg" \
    --opts MODEL.WEIGHTS "$RUN/model_final.pth"

# Fig. 1b relation weights, Fig. 4 query/key PCA, Fig. 5b context propagation.
"$PY" tools/visualize_relations.py --config-file "$CONFIG" --checkpoint "$RUN/model_final.pth" \
    --input "$IMAGE" --output "$OUT" --pixels 151,402 194,80 181,227 --max-colors 256 \
    ${BASELINE_ARGS[@]+"${BASELINE_ARGS[@]}"}

# Training curves: loss, learning rate, mIoU (official script and SemSegEvaluator).
"$PY" tools/plot_metrics.py "${RUNS[@]}" --output "$OUT/training_curves.png" \
    --keys total_loss lr cityscapes_sem_seg/IoU sem_seg/mIoU

# The confusion matrix, once train_net.py evaluates with TEST.CONFUSION_MATRIX True.
if [ -f "$RUN/inference/confusion_matrix.png" ]; then
    cp "$RUN/inference/confusion_matrix.png" "$OUT/confusion_matrix.png"
fi

for f in "$OUT"/*.png "$OUT"/*.jpg; do
    [ -f "$f" ] || continue
    size=$(stat -c %s "$f")
    [ "$size" -lt "$MAX_BYTES" ] || fail "$f is $size bytes (pictures stay under $MAX_BYTES)"
    echo "$f: $size bytes"
done
