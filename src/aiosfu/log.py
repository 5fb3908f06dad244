"""Structured logging: one event per line, bound to a component.

Operators grep and ship these lines (e.g. to ELK), so every log call names an event and
passes its context as fields rather than formatting prose. Two formats: `key=value`
pairs for people and grep, and one JSON object per line for log shippers
(docs/operations.md).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

LogFormat = Literal["kv", "json"]

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(c: str) -> str:
    if c in _ESCAPES:
        return _ESCAPES[c]
    if c.isascii() and c.isprintable():
        return c
    code = ord(c)
    return (
        f"\\x{code:02x}"
        if code < 0x100
        else f"\\u{code:04x}"
        if code < 0x10000
        else f"\\U{code:08x}"
    )


def _format_value(value: Any) -> str:
    """One field, always on one line: values often come from peers (uids, room ids,
    reasons), and a newline in one must not forge a log line of its own. Anything but
    printable ASCII is escaped, so lookalike letters show as what they are."""
    text = str(value)
    if text and text.isascii() and text.isprintable() and not any(c in text for c in ' ="\\'):
        return text
    return '"' + "".join(_escape(c) for c in text) + '"'


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        parts = [
            f"ts={self.formatTime(record, '%Y-%m-%dT%H:%M:%S')}",
            f"level={record.levelname.lower()}",
            f"logger={record.name}",
            f"event={_format_value(record.getMessage())}",
        ]
        parts.extend(f"{k}={_format_value(v)}" for k, v in fields.items())
        if record.exc_info:
            parts.append(f"exc={_format_value(self.formatException(record.exc_info))}")
        return " ".join(parts)


def _utc(created: float) -> str:
    """RFC 3339 with a `Z`, the form every shipper's time parser takes as it is."""
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "component", "event", "fields"}`, one object per line.

    json.dumps escapes newlines and control characters itself, so a peer's value cannot
    forge a line here either; `ensure_ascii` keeps lookalike letters visible as escapes,
    as the key=value format does. Values JSON has no type for go out as their str()."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "component": record.name,
            "event": record.getMessage(),
            "fields": getattr(record, "fields", {}),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True, default=str, separators=(",", ":"))


class Logger:
    """A logger bound to a component and fixed context fields (room, peer, ...)."""

    def __init__(self, name: str, **context: Any) -> None:
        self._logger = logging.getLogger(name)
        self._context = context

    def bind(self, **context: Any) -> Logger:
        bound = Logger.__new__(Logger)
        bound._logger = self._logger
        bound._context = {**self._context, **context}
        return bound

    def _log(self, level: int, event: str, fields: dict[str, Any], exc: bool = False) -> None:
        if self._logger.isEnabledFor(level):
            self._logger.log(
                level, event, extra={"fields": {**self._context, **fields}}, exc_info=exc
            )

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)

    def exception(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields, exc=True)


def get_logger(name: str, **context: Any) -> Logger:
    return Logger(name, **context)


def configure(level: str = "info", fmt: LogFormat = "kv") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiortc/aioice narrate every ICE check and packet; keep them to warnings unless
    # debugging, where their detail is what one wants.
    for noisy in ("aiortc", "aioice"):
        logging.getLogger(noisy).setLevel(
            root.level if root.level <= logging.DEBUG else logging.WARNING
        )
