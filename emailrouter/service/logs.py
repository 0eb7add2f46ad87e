"""structlog setup: JSON lines on stdout when not on a terminal (journald), readable on a terminal.

Context bound with `structlog.contextvars` (mailbox, uid, message_id) is merged into every line.
Libraries that log through the standard library (imapclient, aiosmtpd) go through the same renderer,
so a non-terminal stdout carries nothing but JSON objects (each with `logger` naming its source).
Never log passwords or message bodies: log events carry identities, counts and decisions.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
from structlog.tracebacks import ExceptionDictTransformer

FIRST_KEYS = ("mailbox", "uid", "message_id", "outcome", "rule", "segment", "intent", "hard")
"""On a terminal these lead a line, in this order (a mail's identity, then what was decided about it)."""


def readable_order(_logger: object, _method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """For the terminal: FIRST_KEYS first, the other keys as logged; empty lists and None left out."""
    first = {key: event.pop(key) for key in FIRST_KEYS if key in event}
    return {key: value for key, value in {**first, **event}.items() if value is not None and value != []}


def plain_line(_logger: object, _method: str, event: structlog.typing.EventDict) -> str:
    """An event as one line for a person reading a command's output, like the command's own `warning:` lines:
    `warning: plaintext connection: mailbox jkt: IMAP without TLS to host (credentials ... unencrypted)`."""
    level = event.pop("level", "info")
    name = str(event.pop("event", "")).replace("_", " ")
    for noise in ("timestamp", "logger"):
        event.pop(noise, None)
    detail, hint = event.pop("detail", None), event.pop("hint", None)
    line = f"{level}: {name}" + (f": {detail}" if detail is not None else "")
    line += "".join(f"; {key} {value}" for key, value in event.items())
    return line + (f" ({hint})" if hint is not None else "")


def configure(
    level: str = "info", stream: TextIO | None = None, json: bool | None = None, *, plain: bool = False
) -> None:
    """Logs to `stream` (stdout): JSON lines when it is not a terminal (or `json`), else readable lines; with
    `plain`, one `level: what happened: detail` line per event, for the commands whose output people read
    (quarantine, replay, demo): their warnings never come as JSON between their own lines."""
    stream = stream or sys.stdout
    as_json = False if plain else not stream.isatty() if json is None else json
    renderer: structlog.typing.Processor = (
        plain_line
        if plain
        else structlog.processors.JSONRenderer(sort_keys=False)
        if as_json
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback, sort_keys=False
        )
    )
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # tracebacks as data, without local variables: a local may hold a password
        structlog.processors.ExceptionRenderer(ExceptionDictTransformer(show_locals=False, use_rich=False))
        if as_json
        else structlog.processors.format_exc_info,
    ]
    if not as_json and not plain:
        shared.append(readable_order)
    numeric = logging.getLevelName(level.upper())
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder(), *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(numeric)
