"""Where an SOP may go: the URLs a step may navigate to, the hosts and addresses it may reach."""

from .network import NetworkPolicy, NoServer, OwnOrigin, PolicyError
from .rules import DEFAULT_DENY, Rule, parse_rule
from .urls import BadUrl, Target, clean, parse_target, server_relative

__all__ = [
    "DEFAULT_DENY",
    "BadUrl",
    "NetworkPolicy",
    "NoServer",
    "OwnOrigin",
    "PolicyError",
    "Rule",
    "Target",
    "clean",
    "parse_rule",
    "parse_target",
    "server_relative",
]
