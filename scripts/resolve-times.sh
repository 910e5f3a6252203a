#!/usr/bin/env bash
# How long pip's resolver takes for each extra, as a new user meets it: a fresh venv, the newest pip, torch 2.13.0
# already installed, pip's cache empty and no constraints file. One line per extra: seconds, exit code and the versions
# pip picked for the libraries that decide the stack. `--install` times the real install instead of `--dry-run`.
#
#   scripts/resolve-times.sh [--install] [--wheel FILE] [EXTRA ...]     (default: a wheel built here; every extra)
#
# Runs take minutes and download from PyPI; work files go under ${RESOLVE_TMP:-/tmp/curate-resolve}.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=(--dry-run --report)
wheel=""
extras=()
while [ $# -gt 0 ]; do
  case "$1" in
    --install) mode=(); shift ;;
    --wheel) wheel="$(realpath "$2")"; shift 2 ;;
    *) extras+=("$1"); shift ;;
  esac
done
[ ${#extras[@]} -gt 0 ] || extras=(core fast server argilla train ray openai postgres hdbscan collect all)
tmp="${RESOLVE_TMP:-/tmp/curate-resolve}"
rm -rf "$tmp" && mkdir -p "$tmp"
if [ -z "$wheel" ]; then
  python3 -m pip wheel -q --no-deps -w "$tmp/dist" . >/dev/null
  wheel="$(ls "$tmp"/dist/curate-*.whl)"
fi
# One base venv with torch (from whatever index this machine is configured with: a CPU build), copied for each extra so
# that every extra starts from the same fresh state without reinstalling torch.
python3 -m venv "$tmp/base"
"$tmp/base/bin/python" -m pip install -q --upgrade pip
"$tmp/base/bin/python" -m pip install -q torch==2.13.0
pip_version="$("$tmp/base/bin/python" -m pip --version | cut -d' ' -f2)"
echo "# pip $pip_version, $(date -u +%Y-%m-%d), load average:$(uptime | sed 's/.*load average://')"
printf '%-8s %8s %4s  %s\n' extra seconds rc "picked"
for extra in "${extras[@]}"; do
  env="$tmp/$extra"
  cp -a "$tmp/base" "$env"
  spec="$wheel"
  [ "$extra" = core ] || spec="$wheel[$extra]"
  start=$(date +%s.%N)
  # No constraints file, no machine-wide pip config: what `pip install` does on a user's machine
  env -u PIP_CONSTRAINT -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null timeout 900 \
    "$env/bin/python" -m pip install --no-cache-dir -q "${mode[@]}" ${mode:+"$env/report.json"} "$spec" \
    >"$env/pip.log" 2>&1
  rc=$?
  seconds=$(echo "$(date +%s.%N) - $start" | bc)
  if [ ${#mode[@]} -gt 0 ]; then
    picked=$(python3 - "$env/report.json" 2>/dev/null <<'PY'
import json, sys
keep = {"transformers", "sentence-transformers", "huggingface-hub", "datasets", "openai", "optimum-intel",
        "optimum-onnx", "accelerate", "peft", "argilla", "ray", "protobuf"}
picked = [i["metadata"] for i in json.load(open(sys.argv[1]))["install"]]
print(" ".join(f"{m['name'].lower()}={m['version']}" for m in picked if m["name"].lower() in keep))
PY
)
  else
    picked=$("$env/bin/python" -m pip list 2>/dev/null | grep -i -E '^(transformers|sentence-transformers|openai|datasets) ' | tr -s ' ' '=' | tr '\n' ' ')
  fi
  printf '%-8s %8.1f %4s  %s\n' "$extra" "$seconds" "$rc" "$picked"
  [ "$rc" = 0 ] || tail -5 "$env/pip.log" | sed 's/^/    /'
  rm -rf "$env"
done
