#!/usr/bin/env bash
# Set up dials-diffuse on Debian 12 (or Ubuntu) from scratch:
#   DIALS from Debian's packages, a venv on the system python that sees them,
#   this package built (C++ kernels) and installed into the venv.
#
#   ./install.sh          install for use
#   ./install.sh test     also the test tools and the services the tests use
#
# The venv is ./.venv (set DIALS_DIFFUSE_VENV to put it elsewhere). Nothing is
# installed from PyPI that DIALS provides: dials, dxtbx and cctbx come from
# Debian. numpy and h5py stay at Debian's versions, which cctbx and dxtbx were
# compiled against.
set -euo pipefail
cd "$(dirname "$0")"
extras="${1:-}"
venv="${DIALS_DIFFUSE_VENV:-.venv}"

# bitshuffle: the HDF5 bitshuffle/LZ4 filter plugin (filter 32008) for Eiger data;
# Debian's python3-hdf5plugin and hdf5-filter-plugin do not include it.
# libdeflate-dev: the C++ kernels inflate/deflate HDF5 gzip chunks with it.
debian_packages=(python3-dials python3-dev python3-venv g++ libdeflate-dev
  python3-hdf5plugin bitshuffle python3-pybind11 python3-dask python3-distributed python3-redis)
if [ "$extras" = "test" ]; then
  debian_packages+=(redis-server)
fi

missing=()
for package in "${debian_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install.sh: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [ ! -x "$venv/bin/python" ]; then
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
# libtbx (cctbx) finds its build directory under the interpreter's prefix.
ln -sfn /usr/lib/cctbx "$venv/lib/cctbx"

# Debian ships h5py under the distribution name "h5py._debian_h5py_serial",
# which pip does not recognise as h5py: record the system h5py under its own
# name in the venv, so pip neither builds nor downloads another one (the HDF5
# that dxtbx links must be the one h5py uses).
/usr/bin/python3 - "$venv" <<'PY'
import sys, sysconfig, pathlib, h5py
venv = pathlib.Path(sys.argv[1])
site = venv / pathlib.Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
info = site / f"h5py-{h5py.__version__}.dist-info"
if not any(site.glob("h5py-*.dist-info")):
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: h5py\nVersion: {h5py.__version__}\n"
        "Summary: Debian's h5py (python3-h5py), recorded for pip by dials-diffuse's install.sh\n")
    (info / "INSTALLER").write_text("dials-diffuse-install.sh\n")
    (info / "RECORD").write_text("")
PY

constraints="$venv/constraints.txt"
/usr/bin/python3 - > "$constraints" <<'PY'
import h5py, numpy
print(f"numpy=={numpy.__version__}")
print(f"h5py=={h5py.__version__}")
PY

# Debian's dials.*/dxtbx.* commands run /usr/bin/python3, which does not see
# this venv, so dxtbx would not find our Format classes (entry points) from
# them. Give the venv its own copies that run the same scripts with the venv's
# python: with .venv/bin first on PATH, `dials.import` finds our formats.
for script in /usr/bin/dials.* /usr/bin/dxtbx.*; do
  [ -f "$script" ] || continue
  head -n 1 "$script" | grep -q "^#!/usr/bin/python3" || continue
  wrapper="$venv/bin/$(basename "$script")"
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$(cd "$venv" && pwd)/bin/python" "$script" > "$wrapper"
  chmod +x "$wrapper"
done

target="."
[ "$extras" = "test" ] && target=".[test]"
"$venv/bin/python" -m pip install -q --disable-pip-version-check \
  --no-build-isolation -c "$constraints" -e "$target"
echo "install.sh: dials-diffuse installed in $venv (programs: $venv/bin/dials.diffuse.*)"
