"""The demo's SMTP sink: aiosmtpd on 127.0.0.1 in the running event loop, saving each mail as an .eml file.

Nothing leaves the machine. Files are named `NNNN-first-recipient.eml` in the order they arrived, written
whole (a reader never sees half a file). The scripted, fault-injecting sink the tests use lives in
`tests/support/sink.py`.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._@+-]+")


class _Saver:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.saved = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        self.saved += 1
        first = envelope.rcpt_tos[0] if envelope.rcpt_tos else "no-recipient"
        safe = _UNSAFE_IN_NAME.sub("_", first).strip("._") or "recipient"
        path = self.folder / f"{self.saved:04d}-{safe[:100]}.eml"
        temporary = path.with_name(f".{path.name}.tmp")
        temporary.write_bytes(content)
        os.replace(temporary, path)
        return "250 OK saved"


class DemoSink:
    """`async with DemoSink(folder) as sink:` listens on `sink.host`:`sink.port` until the block ends."""

    def __init__(self, folder: Path) -> None:
        self.host = "127.0.0.1"
        self.port = 0
        self._saver = _Saver(folder)
        self._server: asyncio.base_events.Server | None = None

    @property
    def saved(self) -> int:
        return self._saver.saved

    async def __aenter__(self) -> DemoSink:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(self._saver, hostname="emailrouter-demo-sink"), self.host, 0
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
