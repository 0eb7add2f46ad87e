"""What /healthz, the watchdog and systemd STATUS say when a dependency (relay, state store) is down."""

from __future__ import annotations

from pathlib import Path

from emailrouter.config.loader import Config
from emailrouter.service.daemon import Service
from emailrouter.service.router import Router
from emailrouter.service.store import Store


def test_a_relay_that_is_down_makes_the_service_unhealthy_until_it_works_again(config: Config, tmp_path: Path) -> None:
    """The relay's failure shows in /healthz (and so the watchdog) and in STATUS; a success clears it."""
    router = Router(config, Store(tmp_path / "s.sqlite3"), None)
    service = Service(tmp_path / "emailrouter.yaml", router)
    try:
        assert service._health() == []
        router.relay.went_down("SMTP authentication failed (535)")
        assert service._health() == ["relay: SMTP authentication failed (535)"]
        assert "relay: SMTP authentication failed (535)" in router.status()
        assert router.relay.waiting()  # the outbox waits (backoff) instead of failing mail
        router.relay.came_back()
        assert service._health() == [] and not router.relay.waiting()
    finally:
        router.store.close()
