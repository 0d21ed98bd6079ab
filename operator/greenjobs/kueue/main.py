"""`greenjobs kueue-check`: run the carbon AdmissionCheck controller for Kueue."""

import argparse
import logging
import os

import kopf

from greenjobs.carbon.providers.config import build_provider
from greenjobs.config import load_config
from greenjobs.kubeclient import operator_api_client, utc_now
from greenjobs.logs import configure_logging

from .controller import KueueCheck
from .handlers import Memo, register
from .names import CONTROLLER_NAME

log = logging.getLogger("greenjobs.kueue")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="operator config YAML (zones, providers; default: $GREENJOBS_CONFIG)")
    parser.add_argument(
        "--controller-name",
        default=CONTROLLER_NAME,
        help="spec.controllerName of the AdmissionChecks this controller serves",
    )
    parser.add_argument(
        "--liveness",
        default=os.environ.get("GREENJOBS_LIVENESS", "http://0.0.0.0:8082/healthz"),
        help="kopf liveness endpoint ('' for none)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    config = load_config(args.config)
    provider = build_provider(config.providers, utc_now, config.forecast_cache_ttl)
    check = KueueCheck(operator_api_client(), config, provider, utc_now, args.controller_name)
    registry = kopf.OperatorRegistry()
    register(registry)
    log.info("carbon admission check %s: %d forecast provider(s)", args.controller_name, len(config.providers))
    kopf.run(
        registry=registry,
        memo=Memo(check, tick_seconds=min(config.tick_seconds, 5.0)),
        standalone=True,
        clusterwide=True,
        liveness_endpoint=args.liveness or None,
    )
    return 0
