"""`greenjobs operator`: run the kopf operator with its dependencies wired in."""

import argparse
import logging
import os
import zlib
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import kubernetes

from greenjobs.carbon.providers.config import build_provider
from greenjobs.logs import configure_logging
from greenjobs.metrics import OperatorMetrics

from .config import load_config
from .handlers import Memo, register
from .kube import Kube
from .planning import Event
from .reconciler import Reconciler

log = logging.getLogger("greenjobs.operator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="operator config YAML (default: $GREENJOBS_CONFIG)")
    parser.add_argument("-n", "--namespace", action="append", default=[], help="watch only these namespaces")
    parser.add_argument(
        "--peering",
        default=os.environ.get("GREENJOBS_PEERING"),
        help="kopf peering name: replicas elect one active operator (needs the peering CRDs)",
    )
    parser.add_argument(
        "--priority",
        type=int,
        default=_env_int("GREENJOBS_PEERING_PRIORITY"),
        help="peering priority (default: derived from POD_NAME, else the pid): the highest one acts;"
        " kopf pauses ALL replicas of equal priority, so each replica needs its own",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=_env_int("GREENJOBS_PEERING_LIFETIME"),
        help="seconds a replica's peering record lives without a keep-alive (kopf's default: 60); a"
        " replica that dies without saying goodbye is taken over after this long",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("GREENJOBS_LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="kopf liveness endpoint",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def peering_priority(explicit: int | None) -> int:
    """This replica's peering priority: explicit, else stable per pod name, else per process.

    kopf pauses every operator that sees a peer of equal priority (default 0 for all), which with
    two replicas means neither acts; distinct priorities elect the highest as the active one.
    """
    if explicit is not None:
        return explicit
    pod = os.environ.get("POD_NAME") or os.environ.get("POD_ID")
    seed = pod if pod else f"{os.uname().nodename}/{os.getpid()}"
    return 1 + zlib.crc32(seed.encode()) % 1_000_000


def utc_now() -> datetime:
    return datetime.now(UTC)


def _emit(body: dict[str, Any], event: Event) -> None:
    kopf.event(cast(Any, body), type=event.type, reason=event.reason, message=event.message)


def _api_client() -> kubernetes.client.ApiClient:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    configuration = kubernetes.client.Configuration.get_default_copy()
    # Handlers run in kopf's thread pool (max_workers 16): with the default pool of 10 connections
    # the extra threads open and discard a TLS connection per call ("Connection pool is full").
    configuration.connection_pool_maxsize = 32
    return kubernetes.client.ApiClient(configuration)


class _QuietTicks(logging.Filter):
    """Drop kopf's "Timer 'tick' succeeded." records: one per job per tick is noise, not news
    (100 lines/s with 1,000 jobs at a 10 s tick). Failures of the timer are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and record.getMessage() == "Timer 'tick' succeeded.")


def run(args: argparse.Namespace) -> int:
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    logging.getLogger("kopf.objects").addFilter(_QuietTicks())
    config = load_config(args.config)
    metrics = OperatorMetrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    provider = build_provider(
        config.providers, utc_now, config.forecast_cache_ttl,
        on_error=metrics.on_forecast_error, on_latency=metrics.on_forecast_latency,
    )  # fmt: skip
    reconciler = Reconciler(config, provider, Kube(_api_client(), metrics), metrics, utc_now, _emit)
    registry = kopf.OperatorRegistry()
    register(registry, config)
    settings = kopf.OperatorSettings()
    priority = None
    if args.peering is not None:
        priority = peering_priority(args.priority)
        if args.peering_lifetime:
            settings.peering.lifetime = args.peering_lifetime
        log.info("peering %r with priority %d", args.peering, priority)
    log.info("starting: %d forecast provider(s), namespaces=%s", len(config.providers), args.namespace or "all")
    kopf.run(
        registry=registry,
        settings=settings,
        priority=priority,
        memo=Memo(reconciler),
        standalone=args.peering is None,
        peering_name=args.peering,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    return 0
