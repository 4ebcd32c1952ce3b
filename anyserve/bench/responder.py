"""A trivial HTTP responder: the fastest server this machine can run, to measure a load generator against.

``python -m anyserve.bench.responder PORT`` answers every request with 13 bytes
(the ``hello`` scenario's body) from one asyncio protocol, keeping connections
alive unless the request says ``Connection: close``. The requests/s a generator
reaches against it is that generator's own ceiling on this machine.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from .scenarios import HELLO

_KEEP = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(HELLO), HELLO)
_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s" % (
    len(HELLO),
    HELLO,
)


class Responder(asyncio.Protocol):
    """Answers each request head it finds in the stream; request bodies are not expected."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            if b"\nconnection: close" in head.lower():
                self.transport.write(_CLOSE)
                self.transport.close()
                return
            self.transport.write(_KEEP)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Responder, "127.0.0.1", port, backlog=2048)
    async with server:
        await server.serve_forever()


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        asyncio.run(serve(int(args[0])))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
