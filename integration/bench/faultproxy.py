#!/usr/bin/env python3
"""A userspace TCP proxy for the server path of integration/faults.sh
(pooler -> proxy -> PostgreSQL), for the network faults that `tc netem`
would otherwise give (stdlib only; binds to 127.0.0.1 only).

  faultproxy.py serve --listen-port P --upstream-port U --control-port C
                      [--max-seconds S]
  faultproxy.py ctl --control-port C MODE [ARG]

Modes, switched at any time through the control port (one line in, one
line out: "ok <mode>"):

  normal         forward both ways at once.
  partition      a blackhole: no byte moves in either direction on any
                 connection, and a connection accepted now is held silently
                 (no connect upstream, nothing read, no RST) -- what a
                 pooler sees when every packet is dropped. When the mode
                 goes back to normal, bytes held move on and held
                 connections are connected upstream, as TCP would after a
                 partition that heals within its retransmission timeout
                 (connections the pooler closed meanwhile just end).
  latency MS     every chunk, each direction, is delivered MS ms after it
                 was read (order kept), so a round trip costs 2*MS more.
                 Chunks already delayed keep their delay when the mode
                 changes.
  silent         a server that accepts TCP and then says nothing: a
                 connection accepted now is never connected upstream and
                 never answered (what it sends is read and dropped) until
                 its peer closes it, even after the mode changes.
                 Connections accepted before keep working.

The proxy exits after --max-seconds (a bound for a run that goes wrong),
or on SIGTERM/SIGINT.
"""

import argparse
import asyncio
import signal
import socket
import sys
import time

CHUNK = 65536


class Proxy:
    def __init__(self, upstream_port):
        self.upstream_port = upstream_port
        self.mode = "normal"
        self.delay = 0.0
        # Set when bytes may move (cleared for a partition).
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.stats = {"accepted": 0, "held": 0, "silenced": 0, "open": 0}

    def set_mode(self, words):
        mode = words[0] if words else "status"
        if mode == "status":
            pass
        elif mode == "normal":
            self.mode, self.delay = "normal", 0.0
            self.flowing.set()
        elif mode == "partition":
            self.mode = "partition"
            self.flowing.clear()
        elif mode == "latency":
            self.mode, self.delay = "latency", float(words[1]) / 1000.0
            self.flowing.set()
        elif mode == "silent":
            self.mode, self.delay = "silent", 0.0
            self.flowing.set()
        else:
            return f"error unknown mode {mode!r}"
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.stats.items()))
        return f"ok {self.mode} {counts}"

    async def handle(self, creader, cwriter):
        try:
            await self.forward(creader, cwriter)
        except asyncio.CancelledError:
            pass  # the proxy is stopping

    async def forward(self, creader, cwriter):
        self.stats["accepted"] += 1
        self.stats["open"] += 1
        nodelay(cwriter)
        try:
            if self.mode == "silent":
                self.stats["silenced"] += 1
                await drain_until_eof(creader)
                return
            if not self.flowing.is_set():
                self.stats["held"] += 1
                await self.flowing.wait()
            try:
                ureader, uwriter = await asyncio.open_connection(
                    "127.0.0.1", self.upstream_port)
            except OSError:
                return
            nodelay(uwriter)
            try:
                up = asyncio.create_task(self.pump(creader, uwriter))
                down = asyncio.create_task(self.pump(ureader, cwriter))
                _, pending = await asyncio.wait(
                    {up, down}, return_when=asyncio.FIRST_COMPLETED)
                for t in pending:
                    t.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            finally:
                uwriter.close()
        finally:
            self.stats["open"] -= 1
            cwriter.close()

    async def pump(self, reader, writer):
        """One direction: a reader task stamps each chunk with its delivery
        time, a writer delivers it then (and only while bytes flow)."""
        queue = asyncio.Queue()

        async def read_side():
            while True:
                await self.flowing.wait()
                data = await reader.read(CHUNK)
                queue.put_nowait((time.monotonic() + self.delay, data))
                if not data:
                    return

        reading = asyncio.create_task(read_side())
        try:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self.flowing.wait()
                if not data:
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)

    async def control(self, reader, writer):
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            reply = self.set_mode(line.decode().split())
            print(f"faultproxy: {time.strftime('%H:%M:%S')} {line.decode().strip()} -> {reply}",
                  file=sys.stderr, flush=True)
            writer.write(reply.encode() + b"\n")
            await writer.drain()
        except (asyncio.TimeoutError, ConnectionError, ValueError, IndexError) as e:
            writer.write(f"error {e}\n".encode())
        finally:
            writer.close()


def nodelay(writer):
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def drain_until_eof(reader):
    try:
        while await reader.read(CHUNK):
            pass
    except (ConnectionError, OSError):
        pass


async def serve(a):
    proxy = Proxy(a.upstream_port)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", a.listen_port,
                                        backlog=1024)
    ctl = await asyncio.start_server(proxy.control, "127.0.0.1", a.control_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"faultproxy: 127.0.0.1:{a.listen_port} -> 127.0.0.1:{a.upstream_port}, "
          f"control on {a.control_port}", file=sys.stderr, flush=True)
    try:
        await asyncio.wait_for(stop.wait(), a.max_seconds)
    except asyncio.TimeoutError:
        print("faultproxy: --max-seconds reached, exiting", file=sys.stderr, flush=True)
    server.close()
    ctl.close()


def ctl(a):
    with socket.create_connection(("127.0.0.1", a.control_port), timeout=5) as s:
        s.sendall((" ".join(a.words) + "\n").encode())
        reply = s.makefile().readline().strip()
    print(reply)
    return 0 if reply.startswith("ok") else 1


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--listen-port", type=int, required=True)
    s.add_argument("--upstream-port", type=int, required=True)
    s.add_argument("--control-port", type=int, required=True)
    s.add_argument("--max-seconds", type=float, default=3600)
    c = sub.add_parser("ctl")
    c.add_argument("--control-port", type=int, required=True)
    c.add_argument("words", nargs="+")
    a = p.parse_args()
    if a.cmd == "serve":
        asyncio.run(serve(a))
        return 0
    return ctl(a)


if __name__ == "__main__":
    sys.exit(main())
