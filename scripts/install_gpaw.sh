#!/usr/bin/env bash
# Install GPAW (real PBE DFT) into the project's environment.
#
# GPAW builds from source: it needs a C++ compiler and the headers of libxc, BLAS/LAPACK and
# FFTW (and of OpenMPI whenever OpenMPI's runtime is installed, or the build fails on mpi.h).
# On Debian/Ubuntu the missing packages are installed with apt (as root, or through sudo);
# elsewhere install them yourself and rerun. GPAW 26.7 compiles its C sources as C++, so the
# compiler is g++ (gcc would compile them as C and fail on <algorithm>).
set -euo pipefail
PYTHON="${1:-.venv/bin/python}"
cd "$(dirname "$0")/.."

if command -v dpkg >/dev/null 2>&1; then
    packages=(g++ libxc-dev libopenblas-dev liblapack-dev libfftw3-dev)
    if dpkg -s openmpi-bin >/dev/null 2>&1; then packages+=(libopenmpi-dev); fi
    missing=()
    for package in "${packages[@]}"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    if ((${#missing[@]})); then
        if [ "$(id -u)" -eq 0 ]; then apt=(apt-get); elif sudo -n true 2>/dev/null; then
            apt=(sudo apt-get); else
            echo "GPAW needs these Debian packages: ${missing[*]} (apt-get install them)" >&2
            exit 1
        fi
        echo "installing ${missing[*]} for GPAW's build"
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq
        DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq "${missing[@]}" >/dev/null
    fi
fi
CC="${CC:-g++}" "$PYTHON" -m pip install --quiet -c constraints.txt gpaw gpaw-data
"$PYTHON" -c "import gpaw; from flows.dft.gpaw import check_gpaw; check_gpaw(); \
print('GPAW', gpaw.__version__, 'ready')"
