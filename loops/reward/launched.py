"""The process `accelerate launch` starts for `curate reward train --num-processes N` (see `distributed`): it trains as
the spec file says; rank 0 writes the result, and a Curate error is written back for the launching process to raise.

A module of its own so that `distributed` (imported by the trainer to launch) never imports the trainer back.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from curation.errors import CurateError
from loops.reward.distributed import process_rank
from loops.reward.trainer import train
from loops.reward_config import TrainConfig


def main(spec_file: str) -> None:
    """A launched process: train as `spec_file` says; rank 0 writes the result, a Curate error is written back."""
    spec = json.loads(Path(spec_file).read_text())
    config = spec["config"]
    if config.get("lora_target_modules"):
        config["lora_target_modules"] = tuple(config["lora_target_modules"])
    rank, _ = process_rank()
    try:
        result = train(spec["data"], spec["out"], config=TrainConfig(**config), loss=config["loss"],
                       ratings=spec["ratings"], progress=spec["progress"])
    except CurateError as exc:
        Path(spec["errors"], f"error-{rank}.json").write_text(json.dumps({"error": str(exc)}))
        raise SystemExit(1) from None
    if rank == 0:
        Path(spec["result"]).write_text(json.dumps(result, default=str))


if __name__ == "__main__":
    main(sys.argv[1])
