"""Units' webhooks: each body template compiled in the sandbox, and what the service needs to call them.

The core gets a `Webhook` per unit (its URL, the compiled body template, the JSON path of the answer's
ticket number); the service gets a `WebhookEndpoint` (the token's credential source, the timeout, how long
a reply waits for the ticket number). The token is only referenced here and read when a call is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

from emailrouter.config import routing
from emailrouter.config.credentials import Secret
from emailrouter.config.settings import secret_of
from emailrouter.config.templates import sandbox
from emailrouter.config.yamlfile import LineDict, Reader
from emailrouter.core.errors import ComposeError
from emailrouter.core.model import Unit, Webhook
from emailrouter.core.webhook import render_body, sample_webhook_contexts


@dataclass(frozen=True)
class WebhookEndpoint:
    """What the service needs to call one unit's endpoint, besides what the outbox entry holds."""

    unit: str
    token: Secret | None
    timeout: float
    ticket_number: tuple[str, ...]
    reply_waits: float  # seconds


def compile_webhook(key: str, model: routing.Webhook, units_node: Any, r: Reader) -> Webhook | None:
    """The core's Webhook of unit `key`, or None with the template's syntax error recorded (file:line: key)."""
    node = units_node.get(key) if isinstance(units_node, LineDict) else None
    hook = node.get("webhook") if isinstance(node, LineDict) else None
    line = hook.lines.get("body", hook.line) if isinstance(hook, LineDict) else None
    source = f"{r.file}:{line}: units.{key}.webhook.body" if line is not None else f"{r.file}: units.{key}.webhook.body"
    try:
        template = sandbox(html=False).from_string(model.body)
    except jinja2.TemplateSyntaxError as exc:
        r.fail(hook, "body", f"units.{key}.webhook.body", f"template syntax (its line {exc.lineno}): {exc.message}")
        return None

    def render(context: dict[str, Any]) -> str:
        return template.render(context)

    return Webhook(model.url, render, source)


def check_webhook(unit: Unit, reference: str, units_node: Any, r: Reader) -> None:
    """Render the unit's body template with each sample (`check` does this for every unit with a webhook): one
    that fails, or renders no JSON, is a problem at the template, naming the sample."""
    if unit.webhook is None:
        return
    node = units_node.get(unit.key) if isinstance(units_node, LineDict) else None
    hook = node.get("webhook") if isinstance(node, LineDict) else None
    host = urlsplit(unit.webhook.url.replace("{token}", "token")).hostname or ""
    if unit.webhook.url.startswith("http://") and host not in ("localhost", "127.0.0.1", "::1"):
        r.fail(
            hook,
            "url",
            f"units.{unit.key}.webhook.url",
            "plain http:// to another machine: the token and the customer's data travel unencrypted (use https://)",
            warning=True,
        )
    for described, context in sample_webhook_contexts(unit, reference):
        try:
            render_body(unit.webhook, context)
        except ComposeError as exc:
            reason = str(exc).removeprefix(f"{unit.webhook.source}: ")
            r.fail(hook, "body", f"units.{unit.key}.webhook.body", f"does not render for {described}: {reason}")
            return


def endpoints_of(units: Mapping[str, routing.Unit], base: Path) -> dict[str, WebhookEndpoint]:
    """Unit key -> its endpoint's settings, for every unit with a webhook."""
    return {
        key: WebhookEndpoint(
            key,
            secret_of(unit.webhook.token, base),
            unit.webhook.timeout,
            tuple(unit.webhook.ticket_number.split(".")) if unit.webhook.ticket_number else (),
            unit.webhook.reply_waits,
        )
        for key, unit in units.items()
        if unit.webhook is not None
    }
