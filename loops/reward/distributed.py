"""Data-parallel reward training: `train` run again on N processes under `accelerate launch`.

`launch` writes the call (data, out, config, ratings) to a JSON file and runs

    python -m accelerate.commands.launch --multi_gpu --num_processes N --num_machines 1 --main_process_port PORT \\
        --mixed_precision no --dynamo_backend no [--num_cpu_threads_per_process T] -m loops.reward.launched FILE

`--multi_gpu` names accelerate's torchrun launcher: without CUDA each process binds to the CPU and the process group
uses gloo; with GPUs it is one process per GPU and nccl. An `accelerate config` file (`--accelerate-config`: DeepSpeed
ZeRO-3, FSDP, several machines) replaces those flags. Every rank trains (transformers' Trainer wraps the model in DDP
and gives each rank its share of every batch); rank 0 alone saves, evaluates and writes its result back, and the
launching process registers the model, so a model is registered once however many processes trained it.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from curation.errors import CurateError, InputError
from loops.reward_config import TrainConfig

LAUNCHED = "CURATE_REWARD_LAUNCHED"  # set in the launched processes, so that they train instead of launching again


def process_rank() -> tuple[int, int]:
    """(rank, world size) of this process in a `torchrun` / `accelerate launch`; (0, 1) outside one."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class TrainingFailed(CurateError):
    """A launched training process failed without a Curate error to report."""


def command(spec: Path, cfg: TrainConfig) -> list[str]:
    """The `accelerate launch` command line that trains the call described in `spec`."""
    import torch

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--main_process_port", str(_free_port())]
    if cfg.accelerate_config:
        cmd += ["--config_file", str(cfg.accelerate_config)]
        if cfg.num_processes > 1:
            cmd += ["--num_processes", str(cfg.num_processes)]
    else:
        cmd += ["--multi_gpu", "--num_processes", str(cfg.num_processes), "--num_machines", "1",
                "--mixed_precision", "bf16" if cfg.bf16 else "no", "--dynamo_backend", "no"]
        if not torch.cuda.is_available():  # torchrun would give each process 1 thread
            cmd += ["--num_cpu_threads_per_process", str(max(1, (os.cpu_count() or 1) // cfg.num_processes))]
        elif cfg.num_processes > torch.cuda.device_count():
            raise InputError(f"--num-processes {cfg.num_processes} is more than the {torch.cuda.device_count()} "
                             "GPUs here; use one process per GPU")
    return cmd + ["-m", "loops.reward.launched", str(spec)]


def launch(data: str | Path, out: str | Path, cfg: TrainConfig, ratings: str | Path | None = None,
           progress: bool | None = None) -> dict:
    """Train on `cfg.num_processes` processes; returns rank 0's result (as `train` returns it, unregistered).

    The processes' output goes to stderr when progress is shown (a terminal), else only its tail, in the error
    message, when they fail."""
    if cfg.accelerate_config and not Path(cfg.accelerate_config).is_file():
        raise InputError(f"accelerate config {cfg.accelerate_config} does not exist; write one with "
                         "`accelerate config --config_file FILE` or start from docs/reward-models.md")
    show = progress if progress is not None else sys.stderr.isatty()
    with tempfile.TemporaryDirectory(prefix="curate-ddp-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(json.dumps({
            "data": str(Path(data).resolve()), "out": str(Path(out).resolve()),
            "ratings": str(Path(ratings).resolve()) if ratings else None, "config": dataclasses.asdict(cfg),
            "progress": show, "result": str(Path(tmp) / "result.json"), "errors": tmp,
        }))
        tail: collections.deque[str] = collections.deque(maxlen=30)
        with subprocess.Popen(command(spec, cfg), env={**os.environ, LAUNCHED: "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, errors="replace") as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                tail.append(line.rstrip())
                if show:
                    sys.stderr.write(line)
        result = Path(tmp) / "result.json"
        if proc.returncode == 0 and result.exists():
            return json.loads(result.read_text())
        errors = sorted(Path(tmp).glob("error-*.json"))
        if errors:
            raise InputError(json.loads(errors[0].read_text())["error"])
        raise TrainingFailed(f"training on {cfg.num_processes} processes failed (exit {proc.returncode}); "
                             "its last lines: " + " | ".join(tail))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
