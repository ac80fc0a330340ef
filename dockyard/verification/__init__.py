"""Checks of external registries against the registries themselves, in the background."""

from dockyard.verification.service import Verifier

__all__ = ["Verifier"]
