#!/usr/bin/env bash
# What a user gets: builds the wheel, installs 'curate[all]' into a fresh venv as `pip install` does on a user's
# machine (no constraints file; only torch is installed first, dev's CPU build), then, from a folder outside the
# checkout, runs the demo and the tests marked smoke against the installed package. CI runs it after `make test`.
#
#   scripts/wheel-check.sh            (work files in a temporary folder, removed at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
work="$(mktemp -d "${TMPDIR:-/tmp}/curate-wheel-check.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

python3 -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install -q --upgrade pip
"$py" -m pip wheel -q --no-deps -w "$work/dist" . >/dev/null
wheel="$(ls "$work"/dist/curate-*.whl)"
"$py" -m pip install -q torch==2.13.0  # dev's pin, from the index this machine is configured with (a CPU build)
# The user's install: PyPI, no constraints file, no machine-wide pip configuration, the resolver's own choices
env -u PIP_CONSTRAINT -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$py" -m pip install -q --no-cache-dir "$wheel[all]" "pytest>=8" "hypothesis>=6"
installed=$(date +%s)
"$py" -m pip list 2>/dev/null | grep -i -E '^(transformers|sentence-transformers|datasets|openai|optimum-intel|argilla) ' \
  | tr -s ' ' '=' | tr '\n' ' '
echo

# The tests beside a copy of shared/: conftest.py finds the real data at ../shared/data from the tests' folder
mkdir "$work/check"
cp -r tests benchmarks pyproject.toml "$work/check/"  # tests import the benchmarks' simulated servers
ln -s "$(realpath "$repo/../shared")" "$work/shared"
cd "$work/check"
export HF_HUB_OFFLINE=1 CURATE_HOME="$work/home"
unset PYTHONPATH CURATE_DATABASE_URL
"$work/venv/bin/curate" demo --no-serve --conversations 300
# OpenVINO int8 for the smoke tests' embedding (the cluster test calibrates and exports it); the ONNX test and its torch
# reference cover the other two backends
CURATE_EMBED_BACKEND=openvino "$py" -m pytest -q -p no:cacheprovider -m smoke tests
echo "wheel check: install $((installed - start)) s, all $(($(date +%s) - start)) s"
