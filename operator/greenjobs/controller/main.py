"""`greenjobs operator`: run the kopf operator with its dependencies wired in."""

import argparse
import logging
import os
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
        "--liveness",
        default=os.environ.get("GREENJOBS_LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="kopf liveness endpoint",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def utc_now() -> datetime:
    return datetime.now(UTC)


def _emit(body: dict[str, Any], event: Event) -> None:
    kopf.event(cast(Any, body), type=event.type, reason=event.reason, message=event.message)


def _api_client() -> kubernetes.client.ApiClient:
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        kubernetes.config.load_kube_config()
    return kubernetes.client.ApiClient()


def run(args: argparse.Namespace) -> int:
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
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
    log.info("starting: %d forecast provider(s), namespaces=%s", len(config.providers), args.namespace or "all")
    kopf.run(
        registry=registry,
        memo=Memo(reconciler),
        standalone=args.peering is None,
        peering_name=args.peering,
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        liveness_endpoint=args.liveness or None,
    )
    return 0
