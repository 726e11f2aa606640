"""h2load (nghttp2's load driver), for the gRPC section: one C client drives both protocols, so
REST and gRPC are compared with the same client costs.

REST goes over HTTP/1.1 (`--h1`), as wrk and most REST clients send it; gRPC over cleartext
HTTP/2 with the headers gRPC requires and the body in gRPC's length-prefixed framing. h2load
counts HTTP statuses only, and a failed gRPC call is an HTTP 200 whose trailers carry the error:
the section checks gRPC outcomes in the server's own metrics instead (see `grpc_section`).
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path
from typing import Literal

from benchmarks.load import LoadError, LoadResult

Protocol = Literal["rest", "grpc"]
GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"

_FINISHED = re.compile(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_STATUSES = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
# "time for request:  378us  16.38ms  6.56ms  1.95ms  76.39%": min, max, mean, sd.
_REQUEST_TIME = re.compile(r"time for request:\s+(\S+)\s+(\S+)\s+(\S+)")


def h2load_version() -> str:
    h2load = shutil.which("h2load")
    if h2load is None:
        return "absent"
    probe = subprocess.run([h2load, "--version"], capture_output=True, text=True, timeout=10)
    return probe.stdout.strip().splitlines()[0] if probe.stdout.strip() else "unknown"


def grpc_frame(message: bytes) -> bytes:
    """A gRPC message on the wire: uncompressed flag, big-endian length, the protobuf bytes."""
    return b"\x00" + struct.pack(">I", len(message)) + message


def grpc_infer_body(model: str, row: list[float], *, version: str = "") -> bytes:
    """One single-row ModelInferRequest (FP64 contents), framed, from Triton's own client
    package's message classes: the bytes its users send."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    tensor = request.inputs.add(name="input-0", datatype="FP64", shape=[1, len(row)])
    tensor.contents.fp64_contents.extend(row)
    return grpc_frame(request.SerializeToString())


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def parse_h2load(output: str) -> LoadResult:
    finished = _FINISHED.search(output)
    requests = _REQUESTS.search(output)
    statuses = _STATUSES.search(output)
    if finished is None or requests is None or statuses is None:
        raise LoadError(f"h2load printed no result:\n{output[-2000:]}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    succeeded = int(requests.group(3))
    non_2xx = sum(int(statuses.group(group)) for group in (2, 3, 4))
    timing = _REQUEST_TIME.search(output)
    mean_ms = max_ms = float("nan")
    if timing is not None:
        max_ms, mean_ms = _milliseconds(timing.group(2)), _milliseconds(timing.group(3))
    return LoadResult(
        requests=succeeded,
        duration_s=seconds,
        requests_per_s=succeeded / seconds if seconds > 0 else 0.0,
        # h2load reports no percentiles; the section compares throughput only.
        p50_ms=float("nan"),
        p90_ms=float("nan"),
        p99_ms=float("nan"),
        mean_ms=mean_ms,
        max_ms=max_ms,
        non_2xx=non_2xx,
        socket_errors=int(requests.group(5)) + int(requests.group(6)),  # errored, timed out
    )


def run_h2load(
    url: str,
    body_file: Path,
    *,
    protocol: Protocol,
    connections: int,
    duration_s: int,
    cpu: int,
) -> LoadResult:
    """One timed run: `connections` connections, one request in flight on each."""
    if protocol == "grpc":
        headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
        transport: list[str] = []
    else:
        headers = ["-H", "content-type: application/json"]
        transport = ["--h1"]
    argv = [
        "taskset", "-c", str(cpu),
        "h2load", "-t1", f"-c{connections}", "-m1", f"-D{duration_s}",
        *transport, *headers, "-d", str(body_file), url,
    ]  # fmt: skip
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration_s + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise LoadError(f"h2load did not finish: {' '.join(argv)}") from exc
    if done.returncode != 0:
        raise LoadError(f"h2load exited {done.returncode}: {' '.join(argv)}\n{done.stderr}")
    return parse_h2load(done.stdout)
