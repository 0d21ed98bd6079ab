"""`greenjobs operator`: run the kopf operator with its dependencies wired in."""

import argparse
import logging
import os
import re

import kopf

from greenjobs.accounting.footprint import FootprintFactors, build_host_source
from greenjobs.carbon.providers.config import build_provider
from greenjobs.config import load_config
from greenjobs.kubeclient import operator_api_client, utc_now
from greenjobs.logs import configure_logging
from greenjobs.metrics import OperatorMetrics
from greenjobs.planning.settings import FleetSettings
from greenjobs.runtime.leader import add_lease_arguments, elector_from_args, identity

from .events import EventRecorder
from .executor import Executor
from .fleet import FleetCoordinator
from .handlers import Memo, register
from .kube import Kube
from .loop import Controller

log = logging.getLogger("greenjobs.operator")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="operator config YAML (default: $GREENJOBS_CONFIG)")
    parser.add_argument("-n", "--namespace", action="append", default=[], help="watch only these namespaces")
    add_lease_arguments(parser, "operator", "--peering")
    parser.add_argument(
        "--liveness",
        default=os.environ.get("GREENJOBS_LIVENESS", "http://0.0.0.0:8081/healthz"),
        help="kopf liveness endpoint",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


class _QuietEvents(logging.Filter):
    """Drop kopf's "Handler 'node' succeeded." records: the event handlers only feed the work queue,
    and one line per watch event (every node heartbeat) is noise. Failures are still logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno == logging.INFO and QUIET.match(record.getMessage()))


QUIET = re.compile(r"^Handler '(gtj|job|node|pod|workload-[a-z]+)' succeeded\.$")


def run(args: argparse.Namespace) -> int:
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    logging.getLogger("kopf.objects").addFilter(_QuietEvents())
    config = load_config(args.config)
    metrics = OperatorMetrics()
    if config.metrics_port:
        metrics.serve(config.metrics_port)
    provider = build_provider(
        config.providers, utc_now, config.forecast_cache_ttl,
        on_error=metrics.on_forecast_error, on_latency=metrics.on_forecast_latency, fetch=config.forecast_fetch,
    )  # fmt: skip
    api = operator_api_client()
    factors = FootprintFactors.from_mapping(config.footprint)
    kube = Kube(api, metrics)
    executor = Executor(
        config, provider, kube, metrics, utc_now, EventRecorder(api, metrics),
        factors=factors, host_source=build_host_source(factors.host, clock=utc_now),
    )  # fmt: skip
    controller = Controller(executor, utc_now, config.zone_label, config.zone_map, workers=config.workers)
    fleet = FleetSettings.parse(config.fleet)
    if fleet.enabled:
        executor.fleet = controller.fleet = FleetCoordinator(
            fleet, provider, utc_now, config.replan_interval, controller.fleet_snapshot
        )
        controller.fleet.on_moved_earlier = controller.wake_moved_earlier
    elector = elector_from_args(api, args, utc_now, controller.active, config.lease_duration)
    if elector is not None:
        kube.may_write = lambda: elector.leading  # every write re-checks the Lease
        log.info("leader election through Lease %s/%s as %s", args.lease_namespace, args.lease, identity())
        elector.start()
    registry = kopf.OperatorRegistry()
    memo = Memo(controller)
    register(registry, memo.readiness)
    log.info("starting: %d forecast provider(s), namespaces=%s", len(config.providers), args.namespace or "all")
    try:
        kopf.run(
            registry=registry,
            memo=memo,
            standalone=True,
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            liveness_endpoint=args.liveness or None,
        )
    finally:
        if elector is not None:
            elector.stop()
    return 0
