"""Memory across workers: modelport serving one large forest with 1 worker, then 2, then again
after a `SIGHUP` reload with a second version copied into the store.

Memory is read from `/proc/PID/smaps_rollup` for the master and each worker once every worker
has answered requests: Pss (each shared page split between the processes sharing it, so the
sum over processes is what the server costs) and Private (Private_Clean + Private_Dirty, pages
no other process maps: what one more worker adds).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import httpx
import joblib
import sklearn
from sklearn.datasets import make_classification
from sklearn.ensemble import RandomForestClassifier

from benchmarks.servers import (
    MODELPORT,
    RunningServer,
    ServerError,
    cpu_ticks,
    run_modelport,
    start_server,
    stop_server,
    wait_ready,
    wait_workers_settled,
)
from benchmarks.stats import TargetCheck
from benchmarks.targets import ADDED_PRIVATE_TARGET_MB, RELOADED_WORKER_PRIVATE_MB

logger = logging.getLogger("benchmarks")

MODEL = "large-forest"
PATH = f"/models/{MODEL}/predict"


@dataclass(frozen=True)
class ForestSpec:
    """A random forest grown on a seeded synthetic set. Heavy label noise and one feature per
    split (`max_features=1`) grow deep, wide trees fast: about 21,000 nodes (1.7 MB) per tree
    and ~4 s of fitting per million nodes on one core."""

    trees: int
    samples: int = 50_000
    features: int = 8
    label_noise: float = 0.4
    seed: int = 0

    @property
    def cache_name(self) -> str:
        # Pickles are tied to the scikit-learn version that wrote them.
        return (
            f"forest-{self.trees}t-{self.samples}s-{self.features}f-{self.label_noise}n-"
            f"{self.seed}r-sklearn{sklearn.__version__}"
        )


FULL_FOREST = ForestSpec(trees=90)  # ~150 MB in memory
QUICK_FOREST = ForestSpec(trees=4)  # ~7 MB: exercises the same path in a second


@dataclass(frozen=True)
class ForestInfo:
    trees: int
    nodes: int
    artifact_mb: float
    build_s: float
    from_cache: bool
    row: list[float]  # a training row, to send in requests


@dataclass(frozen=True)
class ProcessMemory:
    role: Literal["master", "worker"]
    pid: int
    rss_mb: float
    pss_mb: float
    private_mb: float


@dataclass(frozen=True)
class MemoryStage:
    key: str
    label: str
    workers: int
    served_version: int | None
    warmed: bool  # every worker answered requests before it was measured
    processes: list[ProcessMemory]
    total_pss_mb: float
    total_private_mb: float
    max_worker_private_mb: float


@dataclass(frozen=True)
class MemoryResult:
    forest: ForestInfo
    stages: list[MemoryStage]
    added_private_mb_per_worker: float
    added_pss_mb_per_worker: float
    reload_served_version: int | None
    reload_s: float
    targets: list[TargetCheck]
    # A check beside the targets, not one of them: a reload that left workers holding the old
    # forest as well as the new one would show here.
    reload_check: TargetCheck

    @property
    def reload_ok(self) -> bool:
        return self.reload_served_version == 2


def build_forest(spec: ForestSpec, cache_dir: Path) -> tuple[Path, ForestInfo]:
    """The forest's joblib artifact, built once and cached (reruns load nothing, train nothing)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    artifact = cache_dir / f"{spec.cache_name}.joblib"
    sidecar = cache_dir / f"{spec.cache_name}.json"
    if artifact.is_file() and sidecar.is_file():
        info = ForestInfo(**{**json.loads(sidecar.read_text()), "from_cache": True})
        return artifact, info
    logger.info("building a %d-tree forest (cached in %s)", spec.trees, cache_dir)
    started = time.perf_counter()
    x, y = make_classification(
        n_samples=spec.samples,
        n_features=spec.features,
        n_informative=spec.features // 2,
        flip_y=spec.label_noise,
        random_state=spec.seed,
    )
    forest = RandomForestClassifier(
        n_estimators=spec.trees, max_features=1, random_state=spec.seed, n_jobs=-1
    )
    # The harness is pinned to the client core; nothing runs under load yet, so let the fit
    # use every core, then serve it single-threaded like the bundled forest.
    pinned = os.sched_getaffinity(0)
    os.sched_setaffinity(0, range(os.cpu_count() or 1))
    try:
        forest.fit(x, y)
    finally:
        os.sched_setaffinity(0, pinned)
    forest.set_params(n_jobs=1)
    staging = artifact.with_suffix(".tmp")
    joblib.dump(forest, staging)  # uncompressed, as modelport's store keeps artifacts
    os.replace(staging, artifact)
    info = ForestInfo(
        trees=spec.trees,
        nodes=sum(tree.tree_.node_count for tree in forest.estimators_),
        artifact_mb=artifact.stat().st_size / 2**20,
        build_s=time.perf_counter() - started,
        from_cache=False,
        row=[round(float(value), 6) for value in x[0]],
    )
    sidecar.write_text(json.dumps({k: v for k, v in asdict(info).items() if k != "from_cache"}))
    return artifact, info


def import_version(artifact: Path, store: Path, version: int) -> None:
    """Through the real CLI, the way a user adds a version."""
    run_modelport(
        "import", str(artifact), "--name", MODEL, "--version", str(version),
        "--model-dir", str(store),
        "--description", "Benchmark: a large random forest on synthetic data.",
        timeout=300,
    )  # fmt: skip


def read_memory(pid: int, role: Literal["master", "worker"]) -> ProcessMemory:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        value = rest.split()
        if value and value[0].isdigit():
            fields[name] = int(value[0])  # kB
    return ProcessMemory(
        role=role,
        pid=pid,
        rss_mb=fields.get("Rss", 0) / 1024,
        pss_mb=fields.get("Pss", 0) / 1024,
        private_mb=(fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)) / 1024,
    )


def _served_version(response: httpx.Response) -> int | None:
    header = response.headers.get("X-Model-Version")
    if header is not None and header.isdigit():
        return int(header)
    try:
        version = response.json().get("model_version")
    except ValueError:
        return None
    return version if isinstance(version, int) else None


def _post(url: str, body: bytes) -> httpx.Response:
    # A new connection per request, so the kernel spreads them over the workers.
    return httpx.post(
        f"{url}{PATH}", content=body, headers={"Content-Type": "application/json"}, timeout=60
    )


def warm_every_worker(
    server: RunningServer, pids: list[int], body: bytes, *, timeout_s: float = 60
) -> bool:
    """Send requests until each worker has spent CPU on some (three ticks, 30 ms, is far more
    than an idle worker uses): False if one never got any."""
    baseline = {pid: cpu_ticks(pid) for pid in pids}
    deadline = time.monotonic() + timeout_s
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        while time.monotonic() < deadline:
            replies = list(pool.map(lambda _: _post(server.url, body), range(16)))
            wrong = [reply for reply in replies if reply.status_code != 200]
            if wrong:
                raise ServerError(
                    f"warm-up request answered {wrong[0].status_code}: {wrong[0].text[:300]}"
                )
            sent += len(replies)
            if sent >= 32 and all(cpu_ticks(pid) - baseline[pid] >= 3 for pid in pids):
                return True
    logger.warning("warm-up: not every worker of %s answered requests", pids)
    return False


def _measure(key: str, label: str, server: RunningServer, workers: int, body: bytes) -> MemoryStage:
    pids = wait_workers_settled(server, workers)
    warmed = warm_every_worker(server, pids, body)
    version = _served_version(_post(server.url, body))
    processes = [read_memory(server.pid, "master")]
    processes += [read_memory(pid, "worker") for pid in pids]
    stage = MemoryStage(
        key=key,
        label=label,
        workers=workers,
        served_version=version,
        warmed=warmed,
        processes=processes,
        total_pss_mb=sum(p.pss_mb for p in processes),
        total_private_mb=sum(p.private_mb for p in processes),
        max_worker_private_mb=max(p.private_mb for p in processes if p.role == "worker"),
    )
    logger.info(
        "memory %s: total Pss %.1f MB, private %.1f MB (%s)",
        label,
        stage.total_pss_mb,
        stage.total_private_mb,
        ", ".join(f"{p.role} {p.pid}: private {p.private_mb:.1f}" for p in processes),
    )
    return stage


def _reload_with_new_version(
    server: RunningServer, artifact: Path, store: Path, body: bytes, *, timeout_s: float = 180
) -> tuple[int | None, float]:
    """Copy v2 into the store, SIGHUP the master, and wait for fresh workers that serve it."""
    import_version(artifact, store, 2)
    old_workers = set(server.worker_pids())
    started = time.monotonic()
    os.kill(server.pid, signal.SIGHUP)
    version: int | None = None
    while time.monotonic() - started < timeout_s:
        workers = set(server.worker_pids())
        if workers and not workers & old_workers:
            try:
                version = _served_version(_post(server.url, body))
            except httpx.TransportError:
                version = None
            if version == 2:
                break
        time.sleep(0.2)
    else:
        logger.warning("after SIGHUP, v2 was not served within %.0f s", timeout_s)
    return version, time.monotonic() - started


def run_memory(spec: ForestSpec, *, cache_dir: Path, work_dir: Path, cpu: int) -> MemoryResult:
    artifact, forest = build_forest(spec, cache_dir)
    store = work_dir / "memory-store"
    store.mkdir()
    import_version(artifact, store, 1)
    body = json.dumps({"instances": [forest.row]}).encode()
    stages = []

    server = start_server(MODELPORT, store=store, cpu=cpu, log_dir=work_dir, workers=1)
    try:
        wait_ready(server, PATH, body)
        stages.append(_measure("one_worker", "1 worker", server, 1, body))
    finally:
        stop_server(server)

    server = start_server(MODELPORT, store=store, cpu=cpu, log_dir=work_dir, workers=2)
    try:
        wait_ready(server, PATH, body)
        stages.append(_measure("two_workers", "2 workers", server, 2, body))
        reload_version, reload_s = _reload_with_new_version(server, artifact, store, body)
        stages.append(
            _measure("after_reload", "2 workers, after SIGHUP with v2 added", server, 2, body)
        )
    finally:
        stop_server(server)

    one, two, reloaded = stages
    added_private = two.total_private_mb - one.total_private_mb
    targets = [
        TargetCheck(
            f"each worker beyond the first adds ≤ {ADDED_PRIVATE_TARGET_MB:.0f} MB private",
            added_private,
            ADDED_PRIVATE_TARGET_MB,
            "at_most",
            "MB",
        )
    ]
    reload_check = TargetCheck(
        f"after SIGHUP, each worker's private ≤ {RELOADED_WORKER_PRIVATE_MB:.0f} MB",
        reloaded.max_worker_private_mb,
        RELOADED_WORKER_PRIVATE_MB,
        "at_most",
        "MB",
    )
    return MemoryResult(
        forest=forest,
        stages=stages,
        added_private_mb_per_worker=added_private,
        added_pss_mb_per_worker=two.total_pss_mb - one.total_pss_mb,
        reload_served_version=reload_version,
        reload_s=reload_s,
        targets=targets,
        reload_check=reload_check,
    )
