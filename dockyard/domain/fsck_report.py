"""What `dockyard fsck` tells: the problems it found, what it checked, how far it has got."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass
class Problem:
    kind: str  # corrupt_blob, wrong_size, missing_object, orphan_object, stale_upload, ...
    region: str
    subject: str  # a digest, a storage key, <repository>@<digest> or <repository>:<tag>
    detail: str
    repair: str = ""  # what --repair did about it; empty when nothing was done


@dataclass
class FsckReport:
    repair: bool
    blobs: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)


class FsckProgress(Protocol):
    def begin(self, blobs: int, size: int) -> None: ...

    def advance(self, blobs: int, size: int) -> None: ...
