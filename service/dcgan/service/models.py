"""The model versions a server holds, the routing table requests resolve against, and the swap.

Each loaded version has a ModelRuntime and a DynamicBatcher of its own, so a batch never mixes
versions. The routing table maps a model's name to its versions that take requests. A request
resolves its version and takes a lease on it in one step on the event loop (no await between the
two), and holds the lease to its end: a stream keeps its version to its last chunk.

A new version goes live in this order, all of it off the event loop until the last step: read its
manifest, verify every sha256, check the graph against the manifest, create and warm up the
sessions; then it enters the routing table in one assignment. A version it replaces leaves the
table in the same step (new requests go to the new one) and is retired: once its last lease ends
(the batches already formed finish on it), its batcher shuts down and its sessions are dropped.

A version that fails to load displaces nothing: it is recorded FAILED with its reason (the model
list, the metrics), logged once, and tried again only when its files change, or on an explicit
LoadModel. What the repository holds and which versions to serve come from
`dcgan.service.repository`; which loads happen when, from the model control:
  none      start-up loads the repository; nothing changes afterwards
  poll      the repository is scanned every poll_s and the server follows it
  explicit  start-up loads the repository; afterwards LoadModel and UnloadModel alone
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from dcgan.service.batcher import DynamicBatcher
from dcgan.service.errors import InvalidInput, LoadFailed, ManagementOff, NotFound, Unavailable
from dcgan.service.metrics import ServiceMetrics, VersionMetrics
from dcgan.service.options import BatchingOptions, RuntimeOptions
from dcgan.service.repository import (
    EXPLICIT,
    NONE,
    POLL,
    Repository,
    RepositoryError,
    Signature,
    SingleModel,
    Source,
    VersionFiles,
    VersionPolicy,
)
from dcgan.service.runtime import ModelLoadError, ModelRuntime, ModelSpec, choose_providers

_LOGGER = logging.getLogger(__name__)

T = TypeVar("T")


class VersionState(StrEnum):
    LOADING = "loading"  # being verified, loaded and warmed up
    READY = "ready"  # in the routing table
    UNLOADING = "unloading"  # out of it, finishing the calls it accepted
    FAILED = "failed"  # could not be loaded: `reason`
    UNLOADED = "unloaded"  # in the repository, not served: `reason`


@dataclass(eq=False)
class ServedVersion:
    """A loaded version: its runtime, its batcher, and the calls holding it."""

    model: str
    version: int
    runtime: ModelRuntime
    batcher: DynamicBatcher
    metrics: VersionMetrics
    leases: int = 0
    retired: bool = False  # out of the routing table
    released: asyncio.Event = field(default_factory=asyncio.Event)  # retired, and no lease left

    @property
    def spec(self) -> ModelSpec:
        return self.runtime.spec


@dataclass(eq=False)
class _Record:
    state: VersionState
    reason: str = ""
    signature: Signature | None = None  # the files of the last failed load
    served: ServedVersion | None = None  # READY and UNLOADING


@dataclass(frozen=True)
class VersionStatus:
    version: int
    state: VersionState
    reason: str = ""
    model_id: str = ""
    sha256: str = ""


@dataclass(frozen=True)
class ModelStatus:
    name: str
    versions: list[VersionStatus]
    serving_version: int  # what version 0 resolves to; 0: none serves

    def describe(self) -> str:
        """'version 2 failed: ...; version 1 ready', newest first."""
        parts = []
        for status in sorted(self.versions, key=lambda s: -s.version):
            reason = f": {status.reason}" if status.reason else ""
            parts.append(f"version {status.version} {status.state.value}{reason}")
        return "; ".join(parts) or "no version in the repository"


UNLOADED_ON_REQUEST = "unloaded by UnloadModel"
HealthListener = Callable[[dict[str, bool]], Awaitable[None]]  # model name -> serving


def on_daemon_thread(
    function: Callable[[], T], name: str
) -> tuple[threading.Thread, asyncio.Future[T]]:
    """Run `function` on a daemon thread; the future settles as it returns or raises.

    A caller that stops waiting (cancelled) leaves the thread running, and the process may still
    exit: a daemon thread does not hold it (onnxruntime cannot be interrupted).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # the caller stopped waiting
            return
        if error is None:
            done.set_result(result)  # type: ignore[arg-type]
        else:
            done.set_exception(error)

    def work() -> None:
        result, error = None, None
        try:
            result = function()
        except BaseException as raised:  # handed to the loop, which raises it in the caller
            error = raised
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    return thread, done


class ModelSet:
    """Every model version of one server: loading, routing, swapping and retiring them."""

    def __init__(
        self,
        source: Source,
        *,
        policy: VersionPolicy,
        control: str,
        poll_s: float,
        runtime: RuntimeOptions,
        batching: BatchingOptions,
        metrics: ServiceMetrics,
    ) -> None:
        self.source = source
        self.policy = policy
        self.control = control
        self.poll_s = poll_s
        self._runtime_options = runtime
        self._batching = batching
        self._metrics = metrics
        self._routes: dict[str, dict[int, ServedVersion]] = {}
        self._records: dict[str, dict[int, _Record]] = {}
        self._unloaded: set[str] = set()  # explicit: unloaded on request, until loaded again
        self._prepared: dict[tuple[str, int], ModelRuntime] = {}  # checked before a port opened
        self._lock = asyncio.Lock()  # one scan-and-load at a time
        self._retiring: set[asyncio.Task[None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self._scan_failing = False  # a poll that cannot read the repository, logged once
        self._started = False  # start-up's loads are done
        self._published: dict[str, bool] = {}
        self._listeners: list[HealthListener] = []
        self.loading: threading.Thread | None = None  # a load in progress, inside onnxruntime

    # ------------------------------------------------------------------------- start and stop

    def check(self) -> None:
        """What can be checked before a port opens: the repository can be read, the device can
        serve; a single export's manifest and every sha256. Raises ModelLoadError or
        RepositoryError."""
        self.source.check()
        choose_providers(self._runtime_options)
        if isinstance(self.source, SingleModel):
            name = self.source.name
            self._prepared[name, 1] = ModelRuntime(self.source.export_dir, self._runtime_options)

    def on_health(self, listener: HealthListener) -> None:
        self._listeners.append(listener)

    async def start(self) -> None:
        """Load what the repository holds, as the policy picks. With --model-control none every
        model must serve now (nothing loads later): ModelLoadError otherwise."""
        await self.reconcile()
        self._started = True
        if self.control == NONE:
            if not self._records:
                raise ModelLoadError(f"{self.source.describe()} holds no model")
            for name in sorted(self._records):
                if name not in self._routes:
                    raise ModelLoadError(self._not_served(name))
        if self.control == POLL:
            self._poller = asyncio.ensure_future(self._poll())

    def _not_served(self, name: str) -> str:
        records = self._records[name]
        if isinstance(self.source, SingleModel) and 1 in records and records[1].reason:
            return records[1].reason  # the export's own words, as for a plain --model-dir
        return f"model {name}: {self.status(name).describe()}"

    async def stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None

    def close(self) -> None:
        """Stop every batcher at once (a server stopping, its drain over)."""
        if self._poller is not None:
            self._poller.cancel()
        for task in self._retiring:
            task.cancel()
        for records in self._records.values():
            for record in records.values():
                if record.served is not None:
                    record.served.batcher.shutdown()

    # ------------------------------------------------------------------------- routing

    @property
    def served_models(self) -> list[str]:
        return sorted(self._routes)

    def resolve(self, name: str, version: int) -> ServedVersion:
        """The version a request for model `name` (empty: the only one served) and `version`
        (0: the newest served) goes to. Raises InvalidInput, NotFound or Unavailable."""
        if version < 0:
            raise InvalidInput(f"model_version must be 0 (the newest) or a version, not {version}")
        if not name:
            if len(self._routes) == 1:
                name = next(iter(self._routes))
            elif self._routes:
                raise InvalidInput(
                    f"this server serves {len(self._routes)} models "
                    f"({', '.join(self.served_models)}): name one in model_name"
                )
            elif not self._started or self._loading(None):
                raise Unavailable("the model is still loading")
            else:
                held = "; ".join(f"{s.name}: {s.describe()}" for s in self.statuses())
                raise Unavailable(f"no model is being served ({held or 'the repository is empty'})")
        versions = self._routes.get(name)
        if not versions:
            if not self._started:
                raise Unavailable("the models are still loading")
            if name not in self._records:
                known = ", ".join(sorted(self._records)) or "none"
                raise NotFound(f"no model {name!r} on this server (models: {known})")
            if self._loading(name):
                raise Unavailable(f"model {name} is still loading")
            raise NotFound(f"model {name} is not being served: {self.status(name).describe()}")
        if version == 0:
            return versions[max(versions)]
        served = versions.get(version)
        if served is None:
            record = self._records[name].get(version)
            if record is not None and record.state == VersionState.LOADING:
                raise Unavailable(f"version {version} of model {name} is still loading")
            serving = ", ".join(str(v) for v in sorted(versions))
            raise NotFound(
                f"model {name} has no version {version} being served (serving: {serving})"
            )
        return served

    @contextmanager
    def lease(self, name: str, version: int) -> Iterator[ServedVersion]:
        """Hold the resolved version while a call uses it: it is not released before."""
        served = self.resolve(name, version)
        served.leases += 1
        served.metrics.requests.inc()
        served.metrics.leases.inc()
        try:
            yield served
        finally:
            served.leases -= 1
            served.metrics.leases.dec()
            if served.retired and served.leases == 0:
                served.released.set()

    def _loading(self, name: str | None) -> bool:
        names = [name] if name is not None else list(self._records)
        return any(
            record.state == VersionState.LOADING
            for each in names
            for record in self._records.get(each, {}).values()
        )

    # ------------------------------------------------------------------------- the model list

    def status(self, name: str) -> ModelStatus:
        versions = []
        for version, record in sorted(self._records.get(name, {}).items()):
            spec = record.served.spec if record.served is not None else None
            versions.append(
                VersionStatus(
                    version,
                    record.state,
                    record.reason,
                    spec.model_id if spec else "",
                    spec.sha256 if spec else "",
                )
            )
        serving = self._routes.get(name, {})
        return ModelStatus(name, versions, max(serving) if serving else 0)

    def statuses(self, name: str = "") -> list[ModelStatus]:
        if name:
            if name not in self._records:
                raise NotFound(f"no model {name!r} on this server")
            return [self.status(name)]
        return [self.status(each) for each in sorted(self._records)]

    # ------------------------------------------------------------------------- management

    def _require_explicit(self, call: str) -> None:
        if self.control != EXPLICIT:
            what = "the repository decides" if self.control == POLL else "nothing changes"
            raise ManagementOff(
                f"{call} needs --model-control explicit; this server runs {self.control}, "
                f"under which {what}"
            )

    async def load(self, name: str) -> ModelStatus:
        """LoadModel: scan the model's folder and load what the policy picks, failed versions
        included. The work goes on if the caller goes away."""
        self._require_explicit("LoadModel")
        work = asyncio.ensure_future(self.reconcile(only=name, retry_failed=True))
        failed = await asyncio.shield(work)
        status = self.status(name)
        if failed:
            after = (
                f"version {status.serving_version} still serves"
                if status.serving_version
                else "no version of it serves"
            )
            reasons = "; ".join(
                f"version {s.version}: {s.reason}" for s in status.versions if s.version in failed
            )
            raise LoadFailed(f"model {name} did not load: {reasons}; {after}")
        if not status.serving_version:
            raise LoadFailed(f"model {name} has no version to serve: {status.describe()}")
        return status

    async def unload(self, name: str) -> ModelStatus:
        """UnloadModel: out of routing at once; returns once its accepted calls have finished
        and its sessions are released (which goes on if the caller goes away)."""
        self._require_explicit("UnloadModel")
        async with self._lock:
            if name not in self._records:
                raise NotFound(f"no model {name!r} on this server")
            self._unloaded.add(name)
            retiring = [
                self._retire(name, version, UNLOADED_ON_REQUEST)
                for version in sorted(self._routes.get(name, {}))
            ]
            for record in self._records[name].values():
                if record.state == VersionState.FAILED:
                    continue
                if record.state != VersionState.UNLOADING:
                    record.state, record.reason = VersionState.UNLOADED, UNLOADED_ON_REQUEST
            await self._publish()
        if retiring:
            await asyncio.shield(asyncio.gather(*retiring))
        return self.status(name)

    # ------------------------------------------------------------------------- scan and load

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.reconcile()
            except RepositoryError as error:
                if not self._scan_failing:
                    _LOGGER.warning("%s; serving what is loaded", error)
                self._scan_failing = True
            else:
                if self._scan_failing:
                    _LOGGER.info("%s can be read again", self.source.describe())
                self._scan_failing = False

    async def reconcile(self, only: str | None = None, retry_failed: bool = False) -> set[int]:
        """Bring the served versions in line with the repository and the policy: for every
        model, or the one named (NotFound if the repository holds no such model). Returns the
        versions of `only` that failed to load in this call."""
        async with self._lock:
            found = await asyncio.to_thread(self.source.scan)
            if only is not None:
                if only not in found:
                    known = ", ".join(sorted(found)) or "none"
                    raise NotFound(
                        f"no model {only!r} in {self.source.describe()} (models: {known})"
                    )
                self._unloaded.discard(only)
                names = [only]
            else:
                names = [name for name in sorted(set(found) | set(self._records))]
                names = [name for name in names if name not in self._unloaded]
            failed: set[int] = set()
            for name in names:
                failed = await self._reconcile_model(name, found.get(name), retry_failed)
            await self._publish()
            return failed if only is not None else set()

    async def _reconcile_model(
        self, name: str, folder: dict[int, VersionFiles] | None, retry_failed: bool
    ) -> set[int]:
        """One model: `folder` its versions on disk (None: its folder is gone)."""
        present = folder or {}
        records = self._records.setdefault(name, {})
        for version in [v for v in records if v not in present]:
            if records[version].state in (VersionState.FAILED, VersionState.UNLOADED):
                del records[version]
                self._metrics.set_state(name, version, None)
        tried: set[int] = set()
        failed: set[int] = set()
        while True:
            candidates = [
                version
                for version, files in present.items()
                if version not in failed
                and not (
                    version not in tried
                    and not retry_failed
                    and (record := records.get(version)) is not None
                    and record.state == VersionState.FAILED
                    and record.signature == files.signature
                )
            ]
            wanted = self.policy.select(candidates)
            missing = [v for v in wanted if v not in self._routes.get(name, {})]
            if not missing:
                break
            version = missing[0]  # the newest first
            tried.add(version)
            if not await self._load(name, version, present[version]):
                failed.add(version)
        for version in sorted(set(self._routes.get(name, {})) - set(wanted)):
            if version not in present:
                why = "its folder left the repository"
            elif wanted and version < wanted[-1]:
                why = f"replaced by version {max(wanted)} (version policy {self.policy})"
            else:
                why = f"not picked by the version policy {self.policy}"
            self._retire(name, version, why)
        for version in present:
            record = records.get(version)
            if record is None:
                records[version] = record = _Record(VersionState.UNLOADED)
                self._metrics.set_state(name, version, VersionState.UNLOADED)
            if record.state == VersionState.UNLOADED and (
                not record.reason or record.reason == UNLOADED_ON_REQUEST
            ):
                record.reason = f"not picked by the version policy {self.policy}"
        if folder is None and not records:
            del self._records[name]  # its folder left the repository, and nothing of it runs
        return failed

    async def _off_loop(self, function: Callable[[], T], name: str) -> T:
        self.loading, done = on_daemon_thread(function, name)
        return await done

    async def _load(self, name: str, version: int, files: VersionFiles) -> bool:
        """Load one version and put it in the routing table; False (recorded, logged) if not."""
        records = self._records[name]
        record = _Record(VersionState.LOADING)
        records[version] = record
        self._metrics.set_state(name, version, VersionState.LOADING)
        started = time.perf_counter()
        try:
            runtime = self._prepared.pop((name, version), None)
            if runtime is None:  # the manifest, every sha256 and the device, reading every file
                runtime = await self._off_loop(
                    lambda: ModelRuntime(files.path, self._runtime_options), "model-check"
                )
            await self._off_loop(runtime.load, "model-load")
        except ModelLoadError as error:
            record.state, record.reason, record.signature = (
                VersionState.FAILED,
                str(error),
                (files.signature),
            )
            self._metrics.set_state(name, version, VersionState.FAILED)
            self._metrics.load_failures.labels(name, str(version)).inc()
            if isinstance(self.source, Repository):  # a single export's error ends the start
                _LOGGER.warning("model %s version %d not loaded: %s", name, version, error)
            return False
        metrics = self._metrics.for_version(name, version)
        batcher = DynamicBatcher(
            runtime.run,
            self._batching,
            metrics,
            instances=runtime.instances,
            wide_lane=runtime.has_wide_lane,
        )
        served = ServedVersion(name, version, runtime, batcher, metrics)
        self._routes.setdefault(name, {})[version] = served  # the switch: requests come here now
        record.state, record.served = VersionState.READY, served
        self._metrics.set_state(name, version, VersionState.READY)
        spec = runtime.spec
        self._metrics.model.labels(name, str(version)).info(
            {
                "model_id": spec.model_id,
                "sha256": spec.sha256,
                "provider": runtime.provider,
                "nz": str(spec.nz),
                "shape": f"{spec.channels}x{spec.image_size}x{spec.image_size}",
            }
        )
        _LOGGER.info(
            "model %s version %d ready: %s on %s, loaded in %.2f s",
            name, version, spec.model_id, runtime.provider, time.perf_counter() - started,
        )  # fmt: skip
        await self._publish()
        return True

    def _retire(self, name: str, version: int, why: str) -> asyncio.Task[None]:
        """Out of the routing table now; released once its last lease ends."""
        routes = self._routes[name]
        served = routes.pop(version)
        if not routes:
            del self._routes[name]
        served.retired = True
        if served.leases == 0:
            served.released.set()
        record = self._records[name][version]
        record.state = VersionState.UNLOADING
        self._metrics.set_state(name, version, VersionState.UNLOADING)
        task = asyncio.ensure_future(self._release(served, record, why))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)
        return task

    async def _release(self, served: ServedVersion, record: _Record, why: str) -> None:
        await served.released.wait()
        await served.batcher.close()
        served.runtime.close()
        self._metrics.retire(served.model, served.version)
        record.served = None
        records = self._records.get(served.model, {})
        if records.get(served.version) is record:
            record.state, record.reason = VersionState.UNLOADED, why
            self._metrics.set_state(served.model, served.version, VersionState.UNLOADED)
        _LOGGER.info("model %s version %d unloaded: %s", served.model, served.version, why)

    async def _publish(self) -> None:
        """Tell the listeners (health) which models serve, when that changed."""
        serving = {name: False for name in self._published}  # a model gone: not serving
        serving |= {name: name in self._routes for name in self._records}
        if serving == self._published:
            return
        self._published = serving
        for listener in self._listeners:
            await listener(dict(serving))
