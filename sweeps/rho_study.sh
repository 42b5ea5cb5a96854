#!/usr/bin/env bash
# The rho-regularisation study of the README: sweeps/rho.yaml (distance vs rho_distance; here
# p = 0.1 and 0.35 only, to fit 2 CPU cores; 3 seeds) under 2 splits x 2 regimes, each condition
# its own sweep:
#   rho-random-scratch   random class split, trained from scratch (optim.lr 1e-3)
#   rho-random-ft        random class split, backbone pretrained as a classifier of the source
#                        classes (pretrain.epochs 10), then fine-tuned at optim.lr 1e-4
#   rho-script-scratch   shifted split: symbol classes train, letter classes test
#   rho-script-ft
# Every condition holds out the same 25% of the classes as the pretraining source (also the
# scratch ones, so all four train and test on the same classes); per-epoch test R@1 monitoring is
# off (it selects nothing and costs a third of each epoch). The default 15-epoch schedule.
# Two experiments at a time with one torch thread each (on 2 CPU cores, faster than one with two).
# Rerun to resume: only the missing runs run.
set -euo pipefail
common=(--only distance,p0.1,p0.35 --concurrency 2 --set data.glyphs.source_fraction=0.25 --set train.track_test_recall=false --set train.num_threads=1)
finetune=(--set pretrain.epochs=10 --set optim.lr=0.0001)
for split in script random; do
  python -m pipelines.sweep sweeps/rho.yaml --name "rho-$split-ft" "${common[@]}" --set "data.glyphs.split_by=$split" "${finetune[@]}"
  python -m pipelines.sweep sweeps/rho.yaml --name "rho-$split-scratch" "${common[@]}" --set "data.glyphs.split_by=$split"
done
