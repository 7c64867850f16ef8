"""The JSON API under /api: SOPs, runs, events, controls, artifacts, batches, and its OpenAPI document."""

from __future__ import annotations

from . import batches, breakers, dead_letters, openapi, runs, schedules, sops, webhooks  # noqa: F401  (each registers its endpoints)
from .endpoints import ENDPOINTS, routes
from .openapi import document as openapi_document
from .serialize import document_json, run_json, step_json

__all__ = ["ENDPOINTS", "document_json", "openapi_document", "routes", "run_json", "step_json"]
