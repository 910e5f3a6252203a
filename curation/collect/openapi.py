"""The OpenAPI description of `curate collect`'s JSON API, served at GET /openapi.json."""
from __future__ import annotations


def _one_or_many(ref: str) -> dict:
    return {"oneOf": [{"$ref": ref}, {"type": "array", "items": {"$ref": ref}}]}


_ANSWER = {"type": "object", "properties": {
    "accepted": {"type": "integer", "description": "records stored (or spooled, to be stored when the store is back)"},
    "rejected": {"type": "array", "items": {"type": "object", "properties": {
        "index": {"type": "integer"}, "error": {"type": "string"}}}},
    "durable": {"type": "string", "enum": ["store", "spool"], "description": "where the accepted records are now"}}}
_ERRORS = {
    "400": {"description": "not JSON, nested over 1,024 levels, or no valid record (reasons in `rejected`)"},
    "401": {"description": "missing or unknown bearer token (needed once any token exists)"},
    "413": {"description": "body over --max-body (10 MB by default)"},
    "429": {"description": "the store is down and the spool is full, or too much is waiting: retry after Retry-After"},
}


def _post(summary: str, ref: str, example: dict) -> dict:
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _one_or_many(ref), "example": example}}},
        "responses": {"200": {"description": "accepted: in the store or the spool",
                              "content": {"application/json": {"schema": _ANSWER}}}, **_ERRORS},
    }}


SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "curate collect", "version": "1",
             "description": "Conversations and feedback for Curate, from apps that do not use OpenTelemetry. A retry "
                            "with the same record (the same `id`, or no id and the same messages) is a duplicate."},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": {
        "Message": {"type": "object", "required": ["role"], "properties": {
            "role": {"enum": ["system", "user", "assistant", "tool", "developer", "function"]},
            "content": {"type": ["string", "null"]}, "tool_calls": {"type": "array"}, "tool_call_id": {"type": "string"}}},
        "Feedback": {"type": "object", "required": ["type"], "properties": {
            "type": {"enum": ["thumbs_down", "thumbs_up", "rating", "comment", "flag", "regenerated", "edited", "abandoned"]},
            "value": {"description": "1–5 for a rating, text for a comment"},
            "turn": {"type": "integer", "description": "index of the assistant message (default: the last)"},
            "at": {"type": "string", "format": "date-time"}}},
        "Conversation": {"type": "object", "required": ["messages"], "properties": {
            "id": {"type": "string", "maxLength": 200, "description": "your id; default: a hash of the messages"},
            "messages": {"type": "array", "items": {"$ref": "#/components/schemas/Message"}},
            "model": {"type": "string"}, "created_at": {"type": "string", "format": "date-time"},
            "session_id": {"type": "string"}, "user_id": {"type": "string", "description": "stored only as a salted hash"},
            "metadata": {"type": "object"},
            "feedback": {"type": "array", "items": {"$ref": "#/components/schemas/Feedback"}}}},
        "FeedbackEvent": {"allOf": [{"$ref": "#/components/schemas/Feedback"}, {
            "type": "object", "required": ["conversation_id"], "properties": {
                "conversation_id": {"type": "string"},
                "id": {"type": "string", "description": "your id for the event, so that a retry is a duplicate"}}}]},
    }},
    "security": [{"bearer": []}],
    "paths": {
        "/v1/conversations": _post("Store conversations (the ingest record: OpenAI-style messages)",
                                   "#/components/schemas/Conversation",
                                   {"id": "chat-42", "messages": [{"role": "user", "content": "Hi"},
                                                                  {"role": "assistant", "content": "Hello!"}],
                                    "model": "my-model", "created_at": "2026-01-01T12:00:00Z"}),
        "/v1/feedback": _post("Store feedback events about conversations", "#/components/schemas/FeedbackEvent",
                              {"conversation_id": "chat-42", "type": "thumbs_down", "id": "fb-7"}),
        "/v1/traces": {"post": {"summary": "OTLP/HTTP traces (application/x-protobuf or application/json, gzip or not); "
                                           "GenAI chat spans become conversations",
                                "responses": {"200": {"description": "ExportTraceServiceResponse, with partial_success "
                                                                     "counting the spans that were quarantined"},
                                              **_ERRORS, "415": {"description": "not protobuf or JSON"}}}},
    },
}
