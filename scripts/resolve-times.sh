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
install=""
wheel=""
extras=()
while [ $# -gt 0 ]; do
  case "$1" in
    --install) install=1; shift ;;
    --wheel) wheel="$(realpath "$2")"; shift 2 ;;
    *) extras+=("$1"); shift ;;
  esac
done
[ ${#extras[@]} -gt 0 ] || extras=(core fast server argilla train ray openai postgres hdbscan collect all)
tmp="${RESOLVE_TMP:-/tmp/curate-resolve}"
rm -rf "$tmp" && mkdir -p "$tmp"
# One base venv with torch, from whatever index this machine is configured with (a CPU build)
python3 -m venv "$tmp/base"
{ "$tmp/base/bin/python" -m pip install -q --upgrade pip && "$tmp/base/bin/python" -m pip install -q torch==2.13.0; } \
  >"$tmp/base.log" 2>&1 || { tail -5 "$tmp/base.log"; exit 1; }
if [ -z "$wheel" ]; then
  "$tmp/base/bin/python" -m pip wheel -q --no-deps -w "$tmp/dist" . >>"$tmp/base.log" 2>&1
  wheel="$(ls "$tmp"/dist/curate-*.whl)"
fi
echo "# pip $("$tmp/base/bin/python" -m pip --version | cut -d' ' -f2), $(date -u '+%Y-%m-%d %H:%M UTC'),"\
     "$(grep -o -w -E 'avx512_vnni|avx512f|avx2' /proc/cpuinfo | sort -u | tr '\n' ' ')$(nproc) cores,"\
     "load average:$(uptime | sed 's/.*load average://')"
# seconds: wall clock; cpu: pip's own CPU seconds (user + system, GNU time), which a busy machine stretches far less
printf '%-8s %8s %6s %4s  %s\n' extra seconds cpu rc "picked"
for extra in "${extras[@]}"; do
  # A dry run leaves the venv as it was, so each extra starts from the same fresh one; a real install gets a copy
  env="$tmp/base"
  [ -z "$install" ] || { env="$tmp/$extra"; cp -a "$tmp/base" "$env"; }
  spec="$wheel"
  [ "$extra" = core ] || spec="$wheel[$extra]"
  args=(--dry-run --report "$tmp/$extra.json")
  [ -z "$install" ] || args=()
  timer=()
  [ ! -x /usr/bin/time ] || timer=(/usr/bin/time -f '%U %S' -o "$tmp/$extra.cpu")
  start=$(date +%s.%N)
  # No constraints file, no machine-wide pip config: what `pip install` does on a user's machine
  env -u PIP_CONSTRAINT -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null "${timer[@]}" timeout 900 \
    "$env/bin/python" -m pip install --no-cache-dir -q "${args[@]}" "$spec" >"$tmp/$extra.log" 2>&1
  rc=$?
  seconds=$(echo "$(date +%s.%N) - $start" | bc)
  if [ -z "$install" ]; then
    picked=$(python3 - "$tmp/$extra.json" 2>/dev/null <<'PY'
import json, sys
keep = {"transformers", "sentence-transformers", "huggingface-hub", "datasets", "openai", "optimum-intel",
        "optimum-onnx", "accelerate", "peft", "argilla", "ray", "protobuf"}
picked = [i["metadata"] for i in json.load(open(sys.argv[1]))["install"]]
print(" ".join(f"{m['name'].lower()}={m['version']}" for m in picked if m["name"].lower() in keep))
PY
)
  else
    picked=$("$env/bin/python" -m pip list 2>/dev/null | grep -i -E '^(transformers|sentence-transformers|openai|datasets) ' \
      | tr -s ' ' '=' | tr '\n' ' ')
    rm -rf "$env"
  fi
  cpu=$(awk '{printf "%.0f", $1 + $2}' "$tmp/$extra.cpu" 2>/dev/null || echo "?")
  printf '%-8s %8.1f %6s %4s  %s\n' "$extra" "$seconds" "$cpu" "$rc" "$picked"
  [ "$rc" = 0 ] || grep -v WARNING "$tmp/$extra.log" | tail -5 | sed 's/^/    /'
done
