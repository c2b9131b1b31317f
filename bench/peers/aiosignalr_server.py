"""The aiosignalr peer for signalr-bench: the same four hub methods as our bench hub.

Run by the generator as `python aiosignalr_server.py`; it prints "LISTENING <port>" once bound.
"""

import asyncio
import sys

from aiosignalr.server import Hub, SignalRServer


class BenchHub(Hub):
    # aiosignalr matches invocation targets case-insensitively against method names, so the
    # PascalCase names the generator sends need PascalCase methods here. A method sends its
    # return value in the completion only when it declares a return annotation.
    async def Echo(self, value: str) -> str:
        return value

    async def Broadcast(self, value: str) -> None:
        await self.clients.all_.send("Msg", value)

    async def JoinGroup(self, group: str) -> None:
        await self.groups.add(group)

    async def SendToGroup(self, group: str, value: str) -> None:
        await self.clients.group(group).send("Msg", value)


async def main() -> None:
    server = SignalRServer(BenchHub)
    _, port = await server.serve("127.0.0.1", 0, path="/hub")
    print(f"LISTENING {port}", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
