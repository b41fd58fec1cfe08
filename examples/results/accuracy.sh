#!/bin/bash
# The accuracy figures of docs/results-accuracy.md, one section per table. Long: run one section at a time,
# e.g.  bash examples/results/accuracy.sh default      (runs land in runs/results/, logs beside them)
# Sections: default, fashion, peer, convnet, ablation, rules. Needs Fashion-MNIST for all but default:
#   stopnp data get fashion-mnist   (or: stopnp data convert fashion-mnist <folder with the IDX files>)
set -euo pipefail
OUT=${OUT:-runs/results}
STOPNP=${STOPNP:-stopnp}
FASHION_IDX=${FASHION_IDX:-/usr/share/datasets/fashion-mnist}
mkdir -p "$OUT"

run() {  # run NAME ARGS...: one training, its log in $OUT/NAME.log
    local name=$1; shift
    "$STOPNP" train "$@" --quiet --out "$OUT/$name" --force > "$OUT/$name.log" 2>&1
    tail -1 "$OUT/$name.log"
}

case "${1:-}" in
default)   # the default recipe on the built-in split, 3 seeds
    for s in 0 1 2; do run default-s$s mnist-lenet5 --set run.seed=$s; done ;;
fashion)   # LeNet-5 STOP-WTL on the full Fashion-MNIST, the recipe as shipped
    run fashion-lenet5 fashion-lenet5 ;;
peer)      # snntorch LeNet-5 beside it (own venv, see the script's header)
    ${PEER_PYTHON:-/tmp/peervenv/bin/python} examples/results/peers/snntorch_lenet5_fashion.py "$FASHION_IDX" \
        | tee "$OUT/peer-snntorch.log" ;;
convnet)   # the wider conv net
    run fashion-convnet fashion-convnet ;;
ablation)  # STOP-W, -WT, -WL, -WTL on the built-in digits and on Fashion-MNIST, 3 seeds, same epochs
    for learn in W WT WL WTL; do for s in 0 1 2; do
        run abl-digits-$learn-s$s mnist-lenet5 --set rule.learn=$learn --set run.seed=$s
        run abl-fashion-$learn-s$s fashion-lenet5 --set rule.learn=$learn --set run.seed=$s
    done; done ;;
rules)     # every rule at equal epochs: accuracy, time, peak RSS; memory against T
    "$STOPNP" compare --epochs ${EPOCHS:-25} --out "$OUT/compare" --plots "$OUT/compare-plots" --force ;;
*)
    echo "usage: $0 default|fashion|peer|convnet|ablation|rules" >&2; exit 2 ;;
esac
