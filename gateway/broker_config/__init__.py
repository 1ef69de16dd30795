"""Broker users, ACL and Mosquitto config generated from the site config.

``microfactory broker config`` calls :func:`write_broker_config`; the parts are pure and
tested on their own: :mod:`.identities` (who may do what), :mod:`.mosquitto` (the files'
text), :mod:`.passwords` (Mosquitto's ``$7$`` hashes), :mod:`.credentials` (each program's
secrets).
"""

from __future__ import annotations

from .generate import (
    ACL_FILE,
    CONF_FILE,
    PASSWORD_FILE,
    BrokerConfigError,
    BrokerOptions,
    Generated,
    parse_listener,
    write_broker_config,
)
from .identities import BrokerPlan, Grant, Identity, IdentityError, plan_identities

__all__ = [
    "ACL_FILE",
    "CONF_FILE",
    "PASSWORD_FILE",
    "BrokerConfigError",
    "BrokerOptions",
    "BrokerPlan",
    "Generated",
    "Grant",
    "Identity",
    "IdentityError",
    "parse_listener",
    "plan_identities",
    "write_broker_config",
]
