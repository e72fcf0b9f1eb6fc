#!/usr/bin/env bash
# Run on the CPU machine (it has PyPI): fetch what the offline GPU machine lacks, py-spy and
# bitsandbytes wheels for CPython 3.12 manylinux x86_64, into benchmarks/gpu/wheels (git-ignored).
# Then carry that folder to the device with the working tree (device tool: carry ["benchmarks/gpu/wheels"]).
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p wheels
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64 \
  -d wheels "py-spy>=0.3.14" "bitsandbytes>=0.45" 2>&1 | grep -v "^WARNING: Location" || true
ls wheels/py_spy-*.whl wheels/bitsandbytes-*.whl >/dev/null  # both must be there
du -sh wheels
