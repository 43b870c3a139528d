"""A threaded gRPC server for the gRPC emulators, with raw-bytes method handlers.

Handlers receive the request's serialized bytes and return the response's serialized
bytes, so an emulator can answer with a body that does not parse (a "malformed" fault)
and needs no generated service stubs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import grpc

__all__ = ["MAX_MESSAGE_BYTES", "GrpcServer", "RawHandler"]

#: Message size accepted both ways: room for a full batch of large images.
MAX_MESSAGE_BYTES = 128 * 1024 * 1024

RawHandler = Callable[[bytes, grpc.ServicerContext], bytes]


class GrpcServer:
    """Serves ``methods`` of the fully-qualified ``service`` on ``host:port`` (0: a free port)."""

    def __init__(
        self, service: str, methods: Mapping[str, RawHandler], host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=32, thread_name_prefix="emulator-grpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),  # port 0 must be a port of our own
            ],
        )
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(handler)  # no (de)serializers: raw bytes
            for name, handler in methods.items()
        }
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        self.port = self._server.add_insecure_port(f"{host}:{port}")
        self.host = host
        self._server.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._server.stop(grace=None).wait()
