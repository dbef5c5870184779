# Interop check: aioquic (a QUIC v1 stack that is not quinn) against
# `proto serve quic`: stream echo, DATAGRAM echo, then resumption with 0-RTT.
#
#   python3 -m venv /tmp/aq && /tmp/aq/bin/pip install aioquic
#   /tmp/aq/bin/python tests/interop/aioquic_client.py 127.0.0.1 8443 ~/.local/share/proto/certs/ca.pem
#
# or through the (ignored by default) test:
#   PROTO_AIOQUIC_PYTHON=/tmp/aq/bin/python cargo test --test quic -- --ignored aioquic
import asyncio, sys, ssl
from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import StreamDataReceived, HandshakeCompleted, DatagramFrameReceived
from aioquic.asyncio.protocol import QuicConnectionProtocol

host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tickets = []

class P(QuicConnectionProtocol):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.replies = {}
        self.waiters = {}
        self.dgram = asyncio.get_event_loop().create_future()
    def quic_event_received(self, ev):
        if isinstance(ev, HandshakeCompleted):
            print("handshake: alpn", ev.alpn_protocol, "resumed", ev.session_resumed, "early_data_accepted", ev.early_data_accepted)
        if isinstance(ev, StreamDataReceived):
            self.replies.setdefault(ev.stream_id, b"")
            self.replies[ev.stream_id] += ev.data
            if ev.end_stream:
                self.waiters[ev.stream_id].set_result(self.replies[ev.stream_id])
        if isinstance(ev, DatagramFrameReceived) and not self.dgram.done():
            self.dgram.set_result(ev.data)
    async def echo(self, text):
        sid = self._quic.get_next_available_stream_id()
        self.waiters[sid] = asyncio.get_event_loop().create_future()
        self._quic.send_stream_data(sid, text, end_stream=True)
        self.transmit()
        return await asyncio.wait_for(self.waiters[sid], 5)

async def run(early):
    cfg = QuicConfiguration(is_client=True, alpn_protocols=["proto-echo"], max_datagram_frame_size=65536, server_name="localhost")
    cfg.load_verify_locations(ca)
    if tickets:
        cfg.session_ticket = tickets[-1]
    async with connect(host, port, configuration=cfg, create_protocol=P, session_ticket_handler=tickets.append, wait_connected=not early) as p:
        r = await p.echo(b"hello from aioquic\nsecond line\n")
        print("stream reply:", r)
        if not early:
            p._quic.send_datagram_frame(b"datagram from aioquic"); p.transmit()
            print("datagram reply:", await asyncio.wait_for(p.dgram, 5))
        await asyncio.sleep(0.2)

asyncio.run(run(False))
asyncio.run(run(True))
print("tickets received:", len(tickets))
