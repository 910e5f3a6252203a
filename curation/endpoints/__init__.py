"""OpenAI-compatible chat endpoints: the one client (`ChatClient`), their settings (`Endpoint`, `EndpointSettings`)
and the bounded runner that generate and the judge share. The LLM cluster labeller uses the client alone."""
from curation.endpoints.client import Budget, Capped, ChatClient, Completion, EndpointError, api_keys
from curation.endpoints.config import Endpoint, EndpointSettings, check_endpoint, public_url
from curation.endpoints.runner import RunState, notes, run_batched, run_bounded

__all__ = ["Budget", "Capped", "ChatClient", "Completion", "Endpoint", "EndpointError", "EndpointSettings", "RunState",
           "api_keys", "check_endpoint", "notes", "public_url", "run_batched",
           "run_bounded"]
