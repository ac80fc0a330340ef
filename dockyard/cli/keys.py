"""`dockyard keys`: fresh keys for replicas that share a database."""

from __future__ import annotations

import shlex

from dockyard.registry.tokens import generate_key_pem
from dockyard.security import generate_key_text


def keys() -> None:
    """Print a new encryption key and token signing key as environment settings.

    Give every replica the same two values (keep them in your secret store): the
    encryption key opens stored external-registry passwords, the signing key signs the
    registry tokens that any replica must accept.
    """
    print(f"DOCKYARD_ENCRYPTION_KEY={generate_key_text()}")
    print(f"DOCKYARD_TOKEN_SIGNING_KEY={shlex.quote(generate_key_pem().decode())}")
