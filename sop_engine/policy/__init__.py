"""Where an SOP may go: the URLs a step may navigate to, the hosts and addresses it may reach."""

from .network import NetworkPolicy, OwnOrigin, PolicyError
from .rules import DEFAULT_DENY, Rule, parse_rule
from .urls import BadUrl, Target, clean, parse_target

__all__ = [
    "DEFAULT_DENY",
    "BadUrl",
    "NetworkPolicy",
    "OwnOrigin",
    "PolicyError",
    "Rule",
    "Target",
    "clean",
    "parse_rule",
    "parse_target",
]
