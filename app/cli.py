"""The `modelport` command: train, import, score, serve, reload, models, dev."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

from app.config import get_settings, pid_file_of
from app.server.allocator import malloc_environment


def _train(args: argparse.Namespace) -> int:
    from app.training.examples import train_examples

    model_dir = args.model_dir or get_settings().model_dir
    try:
        lines = train_examples(model_dir, force=args.force, only=args.only or None)
    except ValueError as exc:
        print(f"modelport train: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    for line in lines:
        print(line)  # noqa: T201 - CLI output
    return 0


def _import(args: argparse.Namespace) -> int:
    from app.training.importer import ImportOptions, import_estimator

    settings = get_settings()
    options = ImportOptions(
        version=args.version,
        description=args.description,
        data=args.data,
        target=args.target,
        test_size=args.test_size,
        seed=args.seed,
        version_policy=settings.version_mismatch,
        keep_format=args.keep_format,
        trusted_types=tuple(settings.skops_trusted_types),
        tracking_uri=args.tracking_uri,
    )
    try:
        imported = import_estimator(
            args.source, args.model_dir or settings.model_dir, name=args.name, options=options
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"modelport import: {exc}", file=sys.stderr)  # noqa: T201 - CLI output
        return 2
    card = imported.card
    features = ", ".join(f"{f.name}:{f.dtype}" for f in card.features)
    print(f"imported {card.name} v{card.version} ({card.task}; {features})")  # noqa: T201
    print(f"artifact: {card.artifact}")  # noqa: T201
    if card.evaluation is not None:
        scores = ", ".join(f"{metric} {value:g}" for metric, value in card.metrics.items())
        where = card.evaluation
        print(f"metrics on {where.rows} rows of {where.data}, {where.split}: {scores}")  # noqa: T201
    for note in imported.notes:
        print(f"note: {note}")  # noqa: T201 - CLI output
    return 0


def _score(args: argparse.Namespace) -> int:
    from app.bulk.score import ScoreOptions, score

    if args.resume and args.output is None:
        print("modelport score: --resume needs --output", file=sys.stderr)  # noqa: T201
        return 2
    settings = get_settings()
    if args.model_dir is not None:
        settings = settings.model_copy(update={"model_dir": args.model_dir})
    api_key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    options = ScoreOptions(
        input=args.input,
        model=args.model,
        version=args.version,
        output=args.output,
        url=args.url,
        on_error=args.on_error,
        resume=args.resume,
        input_format=args.input_format,
        api_key=api_key,
    )
    return score(options, settings)


def _serve(args: argparse.Namespace) -> int:
    # exec, so gunicorn's master takes this PID and receives SIGTERM/SIGHUP directly.
    argv = [
        sys.executable,
        "-m",
        "gunicorn",
        "-c",
        "python:app.server.gunicorn_conf",
        "app.main:app",
    ]
    environment = {**os.environ, **malloc_environment(get_settings().malloc_keep_mib, os.environ)}
    os.execve(sys.executable, argv, environment)


def _reload(args: argparse.Namespace) -> int:
    """SIGHUP to the running server's master: fresh workers load the store, old ones drain."""
    pid_file = pid_file_of(get_settings())
    try:
        pid = int(pid_file.read_text().strip())
        if pid <= 0:  # 0 and negatives would signal whole process groups, never one server
            raise ValueError(f"invalid pid {pid}")
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError) as exc:
        print(f"modelport reload: no running server found via {pid_file}: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    print(f"sent SIGHUP to modelport (pid {pid}): workers are reloading the model store")  # noqa: T201
    return 0


# A 503 with Retry-After (a repository write that met a worker being replaced) is retried.
RETRIES = 5


def _server_url(host: str, port: int) -> str:
    """The running server's URL from the settings it shares with this command (a wildcard
    bind address is reached on loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _post(url: str, body: dict[str, Any], api_key: str | None, timeout: float) -> Any:
    """POST JSON and return the decoded reply; an error reply raises `RuntimeError` with the
    server's message, an unreachable server `OSError`."""
    headers = {"Content-Type": "application/json"}
    if api_key:
        headers["X-API-Key"] = api_key
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    for attempt in range(RETRIES + 1):
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as exc:
            retry_after = exc.headers.get("Retry-After", "")
            if exc.code == 503 and retry_after.isdigit() and attempt < RETRIES:
                time.sleep(int(retry_after))  # e.g. the workers were being replaced: retry
                continue
            try:
                message = json.loads(exc.read()).get("error", exc.reason)
            except (ValueError, AttributeError):
                message = exc.reason
            raise RuntimeError(f"{exc.code}: {message}") from exc
    raise AssertionError("unreachable")


def _index_lines(rows: list[dict[str, Any]]) -> list[str]:
    table = [("NAME", "VERSION", "STATE", "REASON")] + [
        (row["name"], row.get("version") or "-", row["state"], row.get("reason") or "")
        for row in rows
    ]
    widths = [max(len(line[column]) for line in table) for column in range(3)]
    return [
        "  ".join(
            [*(cell.ljust(width) for cell, width in zip(line[:3], widths, strict=True)), line[3]]
        ).rstrip()
        for line in table
    ]


def _models(args: argparse.Namespace) -> int:
    """The running server's model repository (the v2 repository API): index, load, unload."""
    settings = get_settings()
    url = (args.url or _server_url(settings.host, settings.port)).rstrip("/")
    api_key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    timeout = settings.repository_timeout + 30
    try:
        if args.verb != "index":
            _post(
                f"{url}/v2/repository/models/{quote(args.name, safe='')}/{args.verb}",
                {},
                api_key,
                timeout,
            )
        rows = _post(
            f"{url}/v2/repository/index",
            {"ready": args.verb == "index" and args.ready},
            api_key,
            timeout,
        )
    except (RuntimeError, OSError) as exc:
        print(f"modelport models {args.verb}: {url}: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    if args.verb == "index":
        lines = _index_lines(rows)
    elif args.verb == "unload":
        lines = [f"unloaded {args.name}: every worker has stopped serving it"]
    else:
        versions = [row for row in rows if row["name"] == args.name]
        lines = [f"loaded {args.name}:", *_index_lines(versions)[1:]]
    for line in lines:
        print(line)  # noqa: T201 - CLI output
    return 0


def _dev(args: argparse.Namespace) -> int:
    settings = get_settings()
    argv = [
        sys.executable, "-m", "uvicorn", "app.main:app", "--reload",
        "--host", settings.host, "--port", str(settings.port),
    ]  # fmt: skip
    os.execv(sys.executable, argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelport", description="Serve scikit-learn models over HTTP."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="Build the bundled example models (skips those present)."
    )
    train.add_argument(
        "--model-dir", type=Path, help="Model store (default: MODELPORT_MODEL_DIR or ./models)."
    )
    train.add_argument(
        "--force", action="store_true", help="Retrain and overwrite existing examples."
    )
    train.add_argument("--only", nargs="*", metavar="NAME", help="Only these examples.")
    train.set_defaults(handler=_train)

    imp = commands.add_parser(
        "import",
        help="Add a fitted estimator (.joblib/.pkl/.skops, or an MLflow model) to the store.",
    )
    imp.add_argument(
        "source",
        help="A .joblib, .pkl or .skops file, an MLflow model directory, or a models:/ or "
        "runs:/ URI (resolved in MLFLOW_TRACKING_URI, a directory or sqlite:/// file).",
    )
    imp.add_argument("--name", required=True)
    imp.add_argument("--version", type=int, help="Version number (default: next free).")
    imp.add_argument("--description", default="", help="Default: the MLflow registered model's.")
    imp.add_argument(
        "--data",
        type=Path,
        help="A CSV or Parquet table of real rows: feature types, ranges, categories, the "
        "example, reference statistics (and metrics, with --target).",
    )
    imp.add_argument("--target", help="The --data column holding the true answers: metrics.")
    imp.add_argument(
        "--test-size",
        type=float,
        help="Score only this share of the rows, split off as train_test_split would "
        "(default: all rows, and the card says so).",
    )
    imp.add_argument("--seed", type=int, default=0, help="The split's random_state (default 0).")
    imp.add_argument(
        "--keep-format",
        action="store_true",
        help="Copy the artifact as it is (default: write .skops where it round-trips).",
    )
    imp.add_argument("--tracking-uri", help="MLflow tracking store (default: MLFLOW_TRACKING_URI).")
    imp.add_argument(
        "--model-dir", type=Path, help="Model store (default: MODELPORT_MODEL_DIR or ./models)."
    )
    imp.set_defaults(handler=_import)

    scoring = commands.add_parser(
        "score",
        help="Predict every row of a CSV, NDJSON or Parquet file, in order (in-process, or "
        "streamed to a server with --url).",
    )
    scoring.add_argument(
        "input", type=Path, help="The rows: .csv (with a header), .ndjson/.jsonl or .parquet."
    )
    scoring.add_argument("--model", required=True, help="Model name.")
    scoring.add_argument("--version", type=int, help="Model version (default: the default one).")
    scoring.add_argument(
        "--output",
        type=Path,
        help="Where the answers go (default: stdout): CSV, or NDJSON for .ndjson/.jsonl; "
        "without a suffix, the input's format (CSV for Parquet).",
    )
    scoring.add_argument(
        "--url", help="A running server (e.g. http://127.0.0.1:8000); default: in-process."
    )
    scoring.add_argument(
        "--on-error",
        choices=["continue", "abort"],
        default="continue",
        help="continue: answer each bad row with its error, in place (default); abort: stop at the first.",
    )
    scoring.add_argument(
        "--resume",
        action="store_true",
        help="Continue an interrupted run: keep the complete rows of --output, score the rest.",
    )
    scoring.add_argument(
        "--input-format", choices=["csv", "ndjson", "parquet"], help="Default: from the suffix."
    )
    scoring.add_argument(
        "--api-key", help="Sent as X-API-Key with --url (default: MODELPORT_API_KEY)."
    )
    scoring.add_argument(
        "--model-dir", type=Path, help="Model store (default: MODELPORT_MODEL_DIR or ./models)."
    )
    scoring.set_defaults(handler=_score)

    serve = commands.add_parser(
        "serve", help="Run gunicorn with uvicorn workers (settings from MODELPORT_*)."
    )
    serve.set_defaults(handler=_serve)
    reload = commands.add_parser(
        "reload", help="Reload the model store in every worker of the running server."
    )
    reload.set_defaults(handler=_reload)
    models = commands.add_parser(
        "models",
        help="The running server's model repository: list, load or unload models.",
        description="Talks to the running server's repository API (/v2/repository/...).",
    )
    verbs = models.add_subparsers(dest="verb", required=True)
    index = verbs.add_parser("index", help="Every model and version with its state and why.")
    index.add_argument("--ready", action="store_true", help="Only the versions ready to serve.")
    load = verbs.add_parser("load", help="Load (or reload) a model's versions from the store.")
    unload = verbs.add_parser("unload", help="Stop serving a model (until it is loaded again).")
    for verb in (load, unload):
        verb.add_argument("name", help="Model name (its folder in the store).")
    for verb in (index, load, unload):
        verb.add_argument(
            "--url", help="The server (default: http://MODELPORT_HOST:MODELPORT_PORT)."
        )
        verb.add_argument("--api-key", help="Its API key (default: MODELPORT_API_KEY).")
        verb.set_defaults(handler=_models)
    dev = commands.add_parser("dev", help="Run uvicorn with --reload for development.")
    dev.set_defaults(handler=_dev)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
