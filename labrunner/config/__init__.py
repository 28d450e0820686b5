"""Configuration: lab.yaml and the scenario files, loaded safely and checked precisely."""

from labrunner.config.load import (
    inventory_profile,
    known_servers,
    load_lab,
    load_scenarios,
    profile_from_state,
    resolve_profile,
    sandbox_account,
    validate,
)

__all__ = [
    "inventory_profile",
    "known_servers",
    "load_lab",
    "load_scenarios",
    "profile_from_state",
    "resolve_profile",
    "sandbox_account",
    "validate",
]
