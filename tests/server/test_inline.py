"""Where exposed methods run: plain ones on a thread, inline ones and coroutines on the event loop."""

from __future__ import annotations

import threading

import fedproto


async def test_plain_methods_run_off_the_loop_and_inline_ones_on_it() -> None:
    worker = fedproto.Worker("threads")
    loop_thread = threading.current_thread()

    @worker.method
    def plain() -> bool:
        return threading.current_thread() is loop_thread

    @worker.method(inline=True)
    def quick() -> bool:
        return threading.current_thread() is loop_thread

    class Owner(fedproto.Worker):
        @fedproto.rpc(inline=True)
        def marked(self) -> bool:
            return threading.current_thread() is loop_thread

    owner = Owner("owner")
    await worker.start("127.0.0.1", 0)
    await owner.start("127.0.0.1", 0)
    try:
        async with fedproto.AsyncClient.connect(worker.url) as client:
            assert await client.call("plain") is False
            assert await client.call("quick") is True
        async with fedproto.AsyncClient.connect(owner.url) as client:
            assert await client.call("marked") is True
    finally:
        await worker.stop()
        await owner.stop()
