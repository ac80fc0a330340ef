"""The Verifier: runs registry checks as tasks of the app's event loop, never in a request.

A request that asks for a check (create, a new host or credentials, POST .../verify) commits
the registry as `verifying` and hands the Verifier its id and time (`follow`); the request is
answered at once. The Verifier runs at most `verify_concurrency` checks at a time, each
bounded by its timeout. It is started and stopped by the app's lifespan; while it runs, a
sweep takes on checks that a dead process left behind (dockyard.domain.verification).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta

from anyio import to_thread

from dockyard.config import Settings
from dockyard.domain.registries import RegistryView
from dockyard.domain.registry_fields import UNREACHABLE
from dockyard.domain.verification import CheckRequest, VerificationStore
from dockyard.unavailable import is_unavailable
from dockyard.verification.addresses import AddressPolicy
from dockyard.verification.probe import Outcome, RegistryProbe

log = logging.getLogger("dockyard.verification")


class Verifier:
    def __init__(self, store: VerificationStore, probe: RegistryProbe, settings: Settings) -> None:
        self.store = store
        self.probe = probe
        self.enabled = settings.verify_registries
        self.concurrency = settings.verify_concurrency
        self.stale_after = timedelta(seconds=settings.verify_stale_seconds)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: asyncio.Semaphore | None = None
        self._pending: set[CheckRequest] = set()  # started, waiting for a slot
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def build(cls, store: VerificationStore, settings: Settings) -> Verifier:
        policy = AddressPolicy(
            allow_private=settings.verify_private_addresses,
            insecure=settings.insecure_registries,
        )
        probe = RegistryProbe(
            policy,
            connect_timeout=settings.verify_connect_timeout_seconds,
            total_timeout=settings.verify_timeout_seconds,
        )
        return cls(store, probe, settings)

    # -- lifecycle (the app's lifespan) ----------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._slots = asyncio.Semaphore(self.concurrency)
        if self.enabled:
            self._sweeper = asyncio.create_task(self._sweep_forever())
        else:
            # Every one, however fresh: with checks off here, nothing else would ever end
            # them. A replica that still checks loses its result (compare-and-set); harmless.
            try:
                await to_thread.run_sync(self.store.release_stale, timedelta(0))
            except Exception as exc:
                if not is_unavailable(exc):
                    log.exception("could not release registries left verifying")
                else:  # busy or down (a worker starting meanwhile): the next start does it
                    log.warning("could not release registries left verifying: %s", exc.args[0])

    async def stop(self) -> None:
        self._loop = None
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        # A check cut off here is left `verifying`; the sweep of the next start takes it on.
        await asyncio.gather(*tasks, return_exceptions=True)
        self._sweeper = None

    # -- asking for checks -----------------------------------------------------------------

    def follow(self, view: RegistryView) -> None:
        """Start the check a change asked for, if it asked for one. Callable from any thread
        (the /v1 handlers run in worker threads); returns at once."""
        if view.check_requested_at is not None:
            self.request(CheckRequest(view.id, view.check_requested_at))

    def request(self, request: CheckRequest) -> None:
        loop = self._loop
        if loop is None:
            return  # not running: once stale, the sweep of a running process takes it on
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: likewise
            loop.call_soon_threadsafe(self._spawn, request)

    def _spawn(self, request: CheckRequest) -> None:
        if self._loop is None or request in self._pending:
            return
        self._pending.add(request)
        task = asyncio.create_task(self._run(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- doing them ------------------------------------------------------------------------

    async def _run(self, request: CheckRequest) -> None:
        assert self._slots is not None
        try:
            async with self._slots:
                self._pending.discard(request)
                await self._check(request.registry_id, request)
        finally:
            self._pending.discard(request)

    async def _check(self, registry_id: uuid.UUID, request: CheckRequest) -> None:
        try:
            target = await to_thread.run_sync(self.store.claim, request)
            if target is None:
                return  # done, superseded, taken on elsewhere, or deleted
            try:
                outcome = await self.probe.check(target.hostname, target.credentials)
            except Exception:
                # A bug of the probe must not leave the registry verifying for good.
                log.exception("checking registry %s failed", registry_id)
                outcome = Outcome(UNREACHABLE, "the check failed")
            written = await to_thread.run_sync(self.store.finish, target, outcome.status)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The database, most likely; the row stays verifying and the sweep retries it.
            log.exception("could not record the check of registry %s", registry_id)
            return
        if written:
            log.info(
                "registry %s (%s): %s, %s",
                registry_id,
                target.hostname,
                outcome.status,
                outcome.reason,
            )

    async def _sweep_forever(self) -> None:
        """At start and every half stale period: take on checks left behind."""
        while True:
            try:
                stale = await to_thread.run_sync(self.store.stale, self.stale_after)
            except Exception:
                log.exception("could not look for registry checks left behind")
                stale = []
            for request in stale:
                self._spawn(request)
            await asyncio.sleep(self.stale_after.total_seconds() / 2)
