"""`--json` prints exactly one JSON document on stdout, whatever a library underneath writes; third-party noise is
silenced; our own progress bars go to stderr, and only on a terminal. Real processes, so that file descriptor 1 is the
real stdout (CliRunner would only catch Python-level writes)."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios
from pathlib import Path

import orjson
import pytest

from curation.synthetic import write_jsonl

# Library noise seen on a fresh home with OpenVINO's calibration (issue: --json broken on AVX-512 VNNI machines)
NOISE = ("Statistics collection", "Applying Smooth Quant", "Could not infer whether the model",
         "expected str, bytes or os.PathLike", "loss_type=None", "Generating train split", "Collecting calibration")


def curate(home: Path, *args: str, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "CURATE_HOME": str(home), **(env or {})}
    return subprocess.run([sys.executable, "-m", "curation.cli.main", *args], env=full_env, capture_output=True,
                          text=True, timeout=600, **kwargs)


def only_json(stdout: str) -> dict:
    lines = stdout.splitlines()
    assert len(lines) == 1, f"stdout must be exactly one JSON line, got {len(lines)}:\n{stdout[:2000]}"
    return orjson.loads(lines[0])


@pytest.fixture
def ingested(tmp_path: Path, home: Path) -> Path:
    traffic = tmp_path / "traffic.jsonl"
    write_jsonl(traffic, 40)
    assert curate(home, "ingest", str(traffic), "--json").returncode == 0
    return home


# A library that prints on stdout from Python and from C (file descriptor 1) in the middle of the command's work.
NOISY_LIBRARY = """
import os, sys
import curation.embed
real = curation.embed.embed
def noisy(*args, **kwargs):
    print("a library's progress line")
    os.write(1, b"a C extension's line\\n")
    return real(*args, **kwargs)
curation.embed.embed = noisy
from curation.cli.main import main
sys.argv = ["curate", *sys.argv[1:]]
main()
"""


def test_json_stays_alone_on_stdout_when_a_library_prints(ingested: Path):
    env = {**os.environ, "CURATE_HOME": str(ingested)}
    out = subprocess.run([sys.executable, "-c", NOISY_LIBRARY, "embed", "--backend", "torch", "--json"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert only_json(out.stdout)["embedded"] == 40
    assert "a library's progress line" in out.stderr and "a C extension's line" in out.stderr


def test_human_output_keeps_stdout_for_results(ingested: Path):
    out = curate(ingested, "embed", "--backend", "torch")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("embedded 40 conversations")


def test_progress_bar_on_a_terminal_only_and_on_stderr(ingested: Path, tmp_path: Path):
    # no terminal (a pipe, as under cron or CI): no bar at all
    piped = curate(ingested, "embed", "--backend", "torch", "--view", "last_turn")  # not the default view
    assert piped.returncode == 0 and "conv/s" not in piped.stderr and "conv/s" not in piped.stdout

    # stderr on a terminal: the bar is drawn there, and stdout still holds only the result
    primary, secondary = pty.openpty()
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # a 0-column terminal gets no bar
    env = {**os.environ, "CURATE_HOME": str(ingested)}
    try:
        proc = subprocess.run([sys.executable, "-m", "curation.cli.main", "embed", "--backend", "torch", "--json"],
                              env=env, stdout=subprocess.PIPE, stderr=secondary, text=True, timeout=600)
        os.close(secondary)
        drawn = b""
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(primary)
    assert proc.returncode == 0
    assert b"embed" in drawn and b"40/40" in drawn, drawn[-500:]
    assert only_json(proc.stdout)["embedded"] == 40


@pytest.mark.slow
def test_openvino_calibration_is_silent_and_cached_once_per_machine(ingested: Path, tmp_path: Path):
    """The VNNI failure: NNCF's progress bars went to stdout while OpenVINO calibrated in a fresh home."""
    cache = tmp_path / "cache"
    env = {"CURATE_CACHE_DIR": str(cache), "CURATE_EMBED_BACKEND": "openvino"}
    first = curate(ingested, "embed", "--json", env=env)
    assert first.returncode == 0, first.stderr
    result = only_json(first.stdout)
    assert (result["embedded"], result["backend"]) == (40, "openvino-int8")
    for noise in NOISE:
        assert noise not in first.stdout and noise not in first.stderr, noise
    done = list(cache.glob("models/*/*-openvino-*/openvino-int8/DONE"))
    assert len(done) == 1
    stamp = done[0].stat().st_mtime_ns

    # a second home on the same machine reuses the calibrated model: no second export
    other = tmp_path / "other-home"
    write_jsonl(tmp_path / "more.jsonl", 10, seed=3)
    assert curate(other, "ingest", str(tmp_path / "more.jsonl"), "--json").returncode == 0
    second = curate(other, "embed", "--json", env=env)
    assert second.returncode == 0, second.stderr
    assert only_json(second.stdout)["backend"] == "openvino-int8"
    assert list(cache.glob("models/*/*-openvino-*/openvino-int8/DONE")) == done
    assert done[0].stat().st_mtime_ns == stamp
    assert not (other / "models").exists() and not (ingested / "models").exists()
