#!/usr/bin/env bash
# The demo: a diffuse-scattering rotation sweep with known ground truth,
# simulated in the Eiger NXmx format, processed with DIALS, then the whole
# diffuse chain (dials.diffuse.process). Everything goes into ./demo/.
# Run ./install.sh first.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$PWD/.venv/bin:$PATH"
if [ -e demo ] && [ ! -e demo/.dials-diffuse-demo ]; then
  echo "demo.sh: ./demo exists and was not made by demo.sh: move it away first" >&2
  exit 1
fi
rm -rf demo
mkdir demo
touch demo/.dials-diffuse-demo
cd demo

step() { printf '\n=== %s\n' "$*"; "$@"; }

step dials.diffuse.simulate kind=rotation size=demo output.directory=data
step dials.import data/rotation_master.h5
step dials.find_spots imported.expt nproc=2
step dials.index imported.expt strong.refl space_group=P212121
step dials.refine indexed.expt indexed.refl
step dials.diffuse.process refined.expt find_peaks.count_threshold=30 \
  mask_peaks.sigma_cutoff=3 integrate.subdivide=2,2,2 output.json=process.json

printf '\nDemo done: see demo/dials.diffuse.process.html (every step with its plots), and in demo/\nthe logs dials.diffuse.*.log, tables *.nxs, maps and PNGs.\n'
printf 'The ground truth is demo/data/truth.h5; the diffuse map can be compared with it.\n'
