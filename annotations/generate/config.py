"""Settings of `curate generate`: curate.toml `[generate]` (or a loop file's `[generate]`), the environment, options.

The keys (see the example in `curation.endpoints.config`), their checks and the endpoint type are shared with
the judge.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from curation.endpoints.config import Endpoint, EndpointSettings, check_endpoint, public_url

__all__ = ["Endpoint", "GenerateSettings", "check_endpoint", "public_url"]


@dataclass
class GenerateSettings(EndpointSettings):
    """Where candidate responses come from, and the bounds of one run."""

    SECTION: ClassVar[str] = "generate"
    ENV: ClassVar[dict[str, str]] = {
        "concurrency": "CURATE_GENERATE_CONCURRENCY", "timeout": "CURATE_GENERATE_TIMEOUT",
        "retries": "CURATE_GENERATE_RETRIES", "max_requests": "CURATE_GENERATE_MAX_REQUESTS",
        "max_total_tokens": "CURATE_GENERATE_MAX_TOTAL_TOKENS"}
    ROLE: ClassVar[str] = "generator"
    NO_ENDPOINTS: ClassVar[str] = ("no generation endpoints: add [[generate.endpoints]] (url, model) to curate.toml, "
                                   "or pass --generate-url URL --generate-model NAME")

    seed: int = field(default=0, metadata={"help": "base of each candidate's seed (sent as `seed`, stored with the candidate)"})
