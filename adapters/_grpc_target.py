"""Where a gRPC adapter connects: one reading of an endpoint string for every gRPC vendor."""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["grpc_target"]

_LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def grpc_target(endpoint: str) -> tuple[str, bool]:
    """(host:port, secure) from ``http://h:p`` / ``grpc://h:p`` (plaintext), ``https://h``, or a
    bare ``h[:p]`` (TLS on port 443 unless the host is local)."""
    if "://" not in endpoint:
        host = endpoint.rsplit(":", 1)[0] if ":" in endpoint else endpoint
        target = endpoint if ":" in endpoint else f"{endpoint}:443"
        return target, host not in _LOCAL_HOSTS
    url = urlsplit(endpoint)
    secure = url.scheme == "https"
    return f"{url.hostname}:{url.port or (443 if secure else 80)}", secure
