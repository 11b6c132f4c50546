#!/usr/bin/env bash
# Prepare, on a machine with PyPI, the wheels the GPU machine lacks (Python 3.12, x86-64) and a
# wheel of this project, into .whl/ (git-ignored); gpu_check.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl fastai fastcore fastprogress fastdownload fasttransform plum-dispatch beartype \
  pydantic pydantic-core annotated-types typing-inspection
python3 -m pip wheel -q --no-deps --no-build-isolation -w .whl .
ls -la .whl
