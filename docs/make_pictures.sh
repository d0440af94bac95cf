#!/usr/bin/env bash
# Redraw the pictures of the README and docs/ (docs/*.png) from the demo models that the README's demo writes to
# checkpoints/ (vqvae.safetensors, codes.safetensors, prior.safetensors and their metrics logs).
#
#   bash docs/make_pictures.sh            # uses .venv/bin/vqgen and checkpoints/
#   VQGEN=vqgen CHECKPOINTS=ck DOCS=/tmp/pictures bash docs/make_pictures.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VQGEN=${VQGEN:-.venv/bin/vqgen}
CK=${CHECKPOINTS:-checkpoints}
DEVICE=${DEVICE:-auto}
DOCS=${DOCS:-docs}
for name in vqvae.safetensors codes.safetensors prior.safetensors vqvae.metrics.jsonl prior.metrics.jsonl; do
    if [[ ! -f "$CK/$name" ]]; then
        echo "error: $CK/$name is missing; run the README demo first" >&2
        exit 1
    fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$DOCS"

# validation digits beside their reconstructions (6 pairs per row)
"$VQGEN" reconstruct "$CK/vqvae.safetensors" --n 36 --out "$tmp/reconstruct" --device "$DEVICE"
cp "$tmp/reconstruct/grid.png" "$DOCS"/reconstructions.png

# a 3 (validation image 150 of mnist5k) turning into an 8 (image 400): encoder space and code swaps
"$VQGEN" interpolate "$CK/vqvae.safetensors" mnist5k:150 mnist5k:400 --steps 10 \
    --out "$DOCS"/interpolation.png --device "$DEVICE"

# code usage and every code decoded on its own
"$VQGEN" codebook "$CK/vqvae.safetensors" --out "$DOCS"/codebook.png --device "$DEVICE"

# samples from the prior: one row per class, 8 per row
"$VQGEN" sample "$CK/prior.safetensors" --n 80 --out "$tmp/samples" --device "$DEVICE"
cp "$tmp/samples/grid.png" "$DOCS"/samples.png

# training curves of both stages
"$VQGEN" curves "$CK/vqvae.metrics.jsonl" --out "$DOCS"/vqvae_curves.png
"$VQGEN" curves "$CK/prior.metrics.jsonl" --out "$DOCS"/prior_curves.png

ls -l "$DOCS"/*.png
