"""The gunicorn configuration's worker hook (app.server.gunicorn_conf), in a process of its own:
OpenMP held to one thread in each worker."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

_SCRIPT = """
import json, os
os.environ.pop("OMP_NUM_THREADS", None)
import sklearn.ensemble  # loads the OpenMP runtime, as the preloaded app does before forking
from threadpoolctl import threadpool_info
before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"]
import app.server.gunicorn_conf as conf
conf.post_fork(None, None)
after = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "openmp"]
print(json.dumps([before, after]))
"""


def test_post_fork_holds_openmp_to_one_thread(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
            "HOME": str(tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    before, after = json.loads(result.stdout.strip().splitlines()[-1])
    assert before, "scikit-learn loaded no OpenMP runtime"
    assert after == [1] * len(before)
