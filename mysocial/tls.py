"""TLS for the gRPC services: the server credentials both services listen with, and
the channel credentials their clients (the CLI, tests) connect with.

Plaintext is the default (`make run`, or a deployment behind a proxy that ends TLS).
With MYSOCIAL_TLS_CERT_PATH and MYSOCIAL_TLS_KEY_PATH the services serve TLS only;
with MYSOCIAL_TLS_CLIENT_CA_PATH as well, a client must present a certificate signed
by that CA (mutual TLS) or its connection is refused during the handshake. Health and
reflection are served on the same port, so they need the same credentials.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from mysocial.config import Settings


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """The services' TLS credentials, or None for plaintext."""
    if not settings.tls_cert_path:
        return None
    client_ca = (
        Path(settings.tls_client_ca_path).read_bytes() if settings.tls_client_ca_path else None
    )
    return grpc.ssl_server_credentials(
        [(Path(settings.tls_key_path).read_bytes(), Path(settings.tls_cert_path).read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel_credentials(
    ca_path: str | None = None, cert_path: str | None = None, key_path: str | None = None
) -> grpc.ChannelCredentials:
    """Client credentials: trust the CA in ca_path (None: the system's CA certificates),
    and present cert_path/key_path to a service that asks for a client certificate."""
    return grpc.ssl_channel_credentials(
        root_certificates=Path(ca_path).read_bytes() if ca_path else None,
        private_key=Path(key_path).read_bytes() if key_path else None,
        certificate_chain=Path(cert_path).read_bytes() if cert_path else None,
    )


def channel(addr: str, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    """A channel to addr: TLS with the given credentials, plaintext with None."""
    if credentials is None:
        return grpc.insecure_channel(addr)
    return grpc.secure_channel(addr, credentials)
