#!/usr/bin/env bash
# Prepare, on a machine with PyPI, the wheels the GPU machine lacks (Python 3.12, x86-64) into .whl/ (git-ignored);
# benchmarks/gpu/session.sh installs them there.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl fastai fastcore 'fastprogress<1.1' fastdownload fasttransform 'plum-dispatch<2.10' beartype \
  pydantic pydantic-core annotated-types typing-inspection
# fastprogress 1.1 needs python-fasthtml (a web stack) and fastai 2.8 asks for plum-dispatch<2.10:
# the pins keep the set importable with --no-deps (checked in a clean venv holding the GPU image's packages).
ls -la .whl
