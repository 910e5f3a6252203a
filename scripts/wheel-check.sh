#!/usr/bin/env bash
# What a user gets: builds the wheel, installs 'curate[all]' into a fresh venv as `pip install` does on a user's
# machine (no constraints file; only torch is installed first, dev's CPU build), then, from a folder outside the
# checkout, runs the demo and the tests marked smoke against the installed package.
#
#   scripts/wheel-check.sh                 both phases, work files in a temporary folder removed at the end
#   scripts/wheel-check.sh install DIR     phase 1 only: the wheel and the venv, in DIR (downloads; little CPU)
#   scripts/wheel-check.sh check DIR       phase 2 only: the demo and `-m smoke` with the venv phase 1 left in DIR
#
# CI runs phase 1 in the background while `make test` runs (it is mostly waiting on PyPI), and phase 2 after it.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
phase="${1:-all}"
case "$phase" in
  all) work="$(mktemp -d "${TMPDIR:-/tmp}/curate-wheel-check.XXXXXX")"; trap 'rm -rf "$work"' EXIT ;;
  install|check) [ $# -eq 2 ] || { echo "usage: $0 [install DIR | check DIR]" >&2; exit 2; }
    work="$(realpath -m "$2")"; mkdir -p "$work" ;;
  *) echo "usage: $0 [install DIR | check DIR]" >&2; exit 2 ;;
esac
py="$work/venv/bin/python"

install() {
  local start; start=$(date +%s)
  python3 -m venv "$work/venv"
  "$py" -m pip install -q --upgrade pip
  "$py" -m pip wheel -q --no-deps -w "$work/dist" . >/dev/null
  local wheel; wheel="$(ls "$work"/dist/curate-*.whl)"
  "$py" -m pip install -q torch==2.13.0  # dev's pin, from the index this machine is configured with (a CPU build)
  # The user's install: PyPI, no constraints file, no machine-wide pip configuration, the resolver's own choices
  env -u PIP_CONSTRAINT -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "$py" -m pip install -q --no-cache-dir \
    "$wheel[all]" "pytest>=8" "hypothesis>=6"
  "$py" -m pip list 2>/dev/null | grep -i -E '^(transformers|sentence-transformers|datasets|openai|optimum-intel|argilla) ' \
    | tr -s ' ' '=' | tr '\n' ' '
  echo
  echo "wheel check: install $(($(date +%s) - start)) s"
  touch "$work/.installed"
}

check() {
  [ -f "$work/.installed" ] || { echo "wheel check: no finished install in $work (run: $0 install $work)" >&2; exit 1; }
  local start; start=$(date +%s)
  # The tests beside a copy of shared/: conftest.py finds the real data at ../shared/data from the tests' folder
  rm -rf "$work/check" "$work/home" "$work/shared"
  mkdir "$work/check"
  cp -r tests benchmarks pyproject.toml "$work/check/"  # tests import the benchmarks' simulated servers
  ln -s "$(realpath "$repo/../shared")" "$work/shared"
  cd "$work/check"
  export HF_HUB_OFFLINE=1 CURATE_HOME="$work/home"
  unset PYTHONPATH CURATE_DATABASE_URL
  "$work/venv/bin/curate" demo --no-serve --conversations 300
  # OpenVINO int8 for the smoke tests' embedding (the cluster test calibrates and exports it); the ONNX test and its
  # torch reference cover the other two backends
  CURATE_EMBED_BACKEND=openvino "$py" -m pytest -q -p no:cacheprovider -m smoke tests
  echo "wheel check: demo and smoke tests $(($(date +%s) - start)) s"
}

case "$phase" in
  all) install; check ;;
  install) install ;;
  check) check ;;
esac
