"""A second, independent client implementation (pysignalr, from PyPI) against our server:
one scenario of each kind, over WebSockets with JSON and MessagePack.

Run by `cargo test -p conformance-tests --test python_client`, which sets SIGNALR_SERVER_BIN.
Prints 'N passed, N failed' and exits non-zero on any failure.
"""

import asyncio
import os
import subprocess
import sys
import traceback

from pysignalr.client import SignalRClient
from pysignalr.protocol.json import JSONProtocol
from pysignalr.protocol.messagepack import MessagepackProtocol

TIMEOUT = 10


class Server:
    def __init__(self):
        self.process = subprocess.Popen(
            [os.environ["SIGNALR_SERVER_BIN"]], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        line = self.process.stdout.readline().strip()
        assert line.startswith("LISTENING "), line
        self.url = f"http://127.0.0.1:{line.split()[1]}/hub"

    def stop(self):
        self.process.kill()
        self.process.wait()


class Client:
    """A started pysignalr client plus helpers that turn its callbacks into awaitables."""

    def __init__(self, url, protocol):
        self.client = SignalRClient(url, protocol=protocol)
        self.errors = []
        self.opened = asyncio.Event()

        async def on_open():
            self.opened.set()

        async def on_error(message):
            self.errors.append(message.error)

        self.client.on_open(on_open)
        self.client.on_error(on_error)

    async def __aenter__(self):
        self.task = asyncio.create_task(self.client.run())
        await asyncio.wait_for(self.opened.wait(), TIMEOUT)
        return self

    async def __aexit__(self, *exc):
        self.task.cancel()
        try:
            await self.task
        except BaseException:
            pass

    async def invoke(self, method, arguments):
        done = asyncio.get_running_loop().create_future()

        async def on_completion(message):
            if not done.done():
                done.set_result(message)

        await self.client.send(method, arguments, on_invocation=on_completion)
        return await asyncio.wait_for(done, TIMEOUT)


async def invocation_with_result(url, protocol):
    async with Client(url, protocol) as c:
        assert (await c.invoke("Add", [2, 40])).result == 42
        assert (await c.invoke("Describe", ["x", 3, True])).result == "x|3|true"
        failed = await c.invoke("Throw", ["nope"])
        assert failed.error == "An unexpected error occurred invoking 'Throw' on the server. HubException: nope", failed.error


async def server_stream(url, protocol):
    async with Client(url, protocol) as c:
        items, done = [], asyncio.get_running_loop().create_future()

        async def on_next(item):
            items.append(item)

        async def on_complete(message):
            done.set_result(message)

        await c.client.stream("Counter", [200, 0], on_next=on_next, on_complete=on_complete)
        await asyncio.wait_for(done, TIMEOUT)
        assert items == list(range(1, 201)), items[:10]


async def client_stream(url, protocol):
    async with Client(url, protocol) as c:
        total = asyncio.get_running_loop().create_future()

        async def on_sum(args):
            total.set_result(args[0])

        c.client.on("SumResult", on_sum)
        async with c.client.client_stream("SumToCaller") as stream:
            for n in range(1, 11):
                await stream.send(n)
        assert await asyncio.wait_for(total, TIMEOUT) == 55


async def client_results(url, protocol):
    async with Client(url, protocol) as c:
        async def answer(args):
            question, n = args
            return f"{question}:{n * 2}"

        async def explode(args):
            raise RuntimeError("python says no")

        c.client.on("GetAnswer", answer)
        c.client.on("Explode", explode)
        assert (await c.invoke("AskCaller", ["GetAnswer", ["q", 21]])).result == "q:42"
        failed = await c.invoke("AskCaller", ["Explode", []])
        assert failed.error and "python says no" in failed.error, failed.error


SCENARIOS = [invocation_with_result, server_stream, client_stream, client_results]


async def main():
    server = Server()
    passed, failed = 0, 0
    try:
        for protocol_name, make_protocol in [("json", JSONProtocol), ("messagepack", MessagepackProtocol)]:
            for scenario in SCENARIOS:
                name = f"{scenario.__name__} ({protocol_name})"
                try:
                    await asyncio.wait_for(scenario(server.url, make_protocol()), 3 * TIMEOUT)
                    passed += 1
                    print(f"ok   {name}", flush=True)
                except Exception:
                    failed += 1
                    print(f"FAIL {name}", flush=True)
                    traceback.print_exc()
    finally:
        server.stop()
    print(f"{passed} passed, {failed} failed", flush=True)
    return failed == 0


if __name__ == "__main__":
    sys.exit(0 if asyncio.run(main()) else 1)
