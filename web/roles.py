"""The roles of API tokens (auth.py checks them; the command line names them without loading the server)."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"  # reads SOPs, runs, batches and the live feed
    OPERATOR = "operator"  # also posts SOPs, starts runs and batches, controls the ones it created
    ADMIN = "admin"  # also controls everyone's runs and batches
