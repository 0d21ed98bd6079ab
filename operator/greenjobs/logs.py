"""Structured logs for the operator and the agent: one JSON object per line, with the `extra={...}`
fields of the call, and the Kubernetes object a kopf record is about."""

import json
import logging
import sys
from datetime import UTC, datetime

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD or key == "settings" or key.startswith("k8s_"):
                continue  # kopf's own bookkeeping, rendered below or not at all
            out[key] = value
        obj = getattr(record, "k8s_ref", None)
        if isinstance(obj, dict):
            out["object"] = f"{obj.get('namespace', '')}/{obj.get('name', '')}"
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(level: int | str = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    for noisy in ("kubernetes.client.rest", "urllib3", "httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
