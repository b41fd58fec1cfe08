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
fashion)   # LeNet-5 STOP-WTL on the full Fashion-MNIST, the recipe as shipped, 3 seeds
    for s in 0 1 2; do run fashion-lenet5-s$s fashion-lenet5 --set run.seed=$s; done ;;
peer)      # snntorch LeNet-5 beside it (own venv, see the script's header), 3 seeds
    for s in 0 1 2; do
        ${PEER_PYTHON:-/tmp/peervenv/bin/python} examples/results/peers/snntorch_lenet5_fashion.py "$FASHION_IDX" \
            --seed $s | tee "$OUT/peer-snntorch-s$s.log"
    done ;;
convnet)   # the wider conv net
    run fashion-convnet fashion-convnet ;;
ablation)  # STOP-W, -WT, -WL, -WTL, 3 seeds: the digits with the default recipe (40 epochs; its WTL runs are
           # the "default" section's), Fashion-MNIST with the fashion recipe for 3 epochs
    for learn in W WT WL WTL; do for s in 0 1 2; do
        [ $learn = WTL ] || run abl-digits-$learn-s$s mnist-lenet5 --set rule.learn=$learn --set run.seed=$s
        run abl-fashion-$learn-s$s fashion-lenet5 --set rule.learn=$learn --set run.seed=$s --set run.epochs=3
    done; done ;;
rules)     # STOP, BPTT, SLTT, OTTT at equal epochs (the default recipe's 40): accuracy, time, peak RSS, 3 seeds.
           # Seed 0 alone on the machine: its times are compared; equal wall time is read off its curves
           # (python examples/results/equal_time.py $OUT/compare-s0). Seeds 1, 2 give the accuracy spread.
    for s in ${SEEDS:-0 1 2}; do
        "$STOPNP" compare --rules stop,bptt,sltt,ottt --epochs ${EPOCHS:-40} --seed $s --out "$OUT/compare-s$s" \
            --plots "$OUT/compare-s$s-plots" --no-memory --force
    done ;;
*)
    echo "usage: $0 default|fashion|peer|convnet|ablation|rules" >&2; exit 2 ;;
esac
