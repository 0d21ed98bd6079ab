"""Durations as users write them: Go style (`90m`, `1h30m`, `2d`) or ISO 8601 (`PT6H`, `P1DT2H`)."""

import re
from datetime import UTC, datetime, timedelta

_GO_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_GO_FULL = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_ISO = re.compile(
    r"P(?:(?P<w>\d+)W)?(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?"
)
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

# The longest duration accepted anywhere (maxDelay, estimatedDuration, the CLI, the operator config): a
# year and a day. It keeps every time computed from one (creation + maxDelay, deadline - duration) far
# from datetime's limits, so that no arithmetic on them can overflow.
MAX_DURATION = timedelta(days=366)
MAX_DURATION_TEXT = "366d"
# The same bound for the CRD's CEL rules, in seconds.
MAX_DURATION_SECONDS = int(MAX_DURATION.total_seconds())

# The same grammar for the CRD's OpenAPI `pattern` (RE2: no look-around), so the API server refuses
# what parse_duration() would refuse.
DURATION_PATTERN = (
    r"^((\d+(\.\d+)?(ms|s|m|h|d))+"
    r"|P(\d+W)?(\d+D)?(T(\d+(\.\d+)?H)?(\d+(\.\d+)?M)?(\d+(\.\d+)?S)?)?)$"
)


def parse_duration(text: str) -> timedelta:
    """Parse `6h`, `1h30m`, `90m`, `2d`, `PT6H`, `P1DT2H`, at most MAX_DURATION (366d).

    Raise ValueError naming the input otherwise; never OverflowError, however many digits it has.
    """
    s = text.strip()
    seconds: float | None = None
    if _GO_FULL.fullmatch(s):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _GO_PART.findall(s))
    else:
        m = _ISO.fullmatch(s)
        if m and s not in ("P", "PT") and not s.endswith("T") and any(m.groupdict().values()):
            g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
            seconds = g["w"] * 604800 + g["d"] * 86400 + g["h"] * 3600 + g["m"] * 60 + g["s"]
    if seconds is None:
        raise ValueError(f"invalid duration {text!r}: use e.g. 90m, 6h, 1h30m or ISO 8601 PT6H")
    # Compared as a float first: a huge number of digits is inf here, never an OverflowError below.
    if not seconds <= MAX_DURATION_SECONDS:
        shown = text if len(text) <= 40 else text[:37] + "..."
        raise ValueError(f"duration {shown!r} is too long: at most {MAX_DURATION_TEXT}")
    return timedelta(seconds=seconds)


def shift_time(t: datetime, d: timedelta, what: str) -> datetime:
    """`t + d`, or a ValueError naming `what` when the result is outside the years datetime can hold."""
    try:
        return t + d
    except OverflowError:
        raise ValueError(f"{what}: {format_time(t)} shifted by {format_duration(d)} is out of range") from None


def format_duration(d: timedelta) -> str:
    """Render a timedelta as the compact Go style (`1h30m`), for messages and tables."""
    total = round(d.total_seconds())
    sign = "-" if total < 0 else ""
    total = abs(total)
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s else "")
    return sign + (out or "0s")


def parse_time(text: str) -> datetime:
    """Parse RFC 3339 / ISO 8601 or `YYYY-MM-DD HH:MM:SS` (read as UTC) into an aware UTC datetime."""
    s = text.strip()
    if s.endswith(("Z", "z")):
        s = s[:-1] + "+00:00"
    t = datetime.fromisoformat(s)
    try:
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+05:00 is before year 1 in UTC
        raise ValueError(f"time {text!r} is out of range") from None


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with a `Z`, second precision, as Kubernetes writes times."""
    return t.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")
