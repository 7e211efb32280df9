"""TLS settings (SPEC section 8) and the server-side SSL contexts built from them.

One `[tls]` table serves both HTTPS and MQTT over TLS. With `client_ca_file`, the MQTT-TLS
listener asks for a client certificate (optional: a device may still use its access key) and
verifies it against that CA; the HTTP server never asks for one.
"""

import ssl
from pathlib import Path

from fleetstate.config import TlsConfig
from fleetstate.errors import Invalid


def server_context(tls: TlsConfig, *, client_certs: bool = False) -> ssl.SSLContext:
    """An SSL context for a listener; `client_certs` asks (optionally) for a device certificate
    signed by `client_ca_file`."""
    if not tls.enabled:
        raise Invalid("[tls] needs both cert_file and key_file")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
        if client_certs and tls.client_ca_file is not None:
            context.load_verify_locations(cafile=str(tls.client_ca_file))
            context.verify_mode = ssl.CERT_OPTIONAL
    except (OSError, ssl.SSLError) as exc:
        raise Invalid(f"[tls]: cannot load {_which(tls, exc)}: {exc}") from exc
    return context


def _which(tls: TlsConfig, exc: BaseException) -> str:
    name = getattr(exc, "filename", None)
    for path in (tls.cert_file, tls.key_file, tls.client_ca_file):
        if path is not None and name is not None and Path(path) == Path(str(name)):
            return path
    return "the certificate files"


def peer_common_name(cert: dict[str, object] | None) -> str | None:
    """The subject CN of a verified peer certificate (`SSLObject.getpeercert()`), if any."""
    if not cert:
        return None
    subject = cert.get("subject", ())
    if not isinstance(subject, tuple):
        return None
    for rdn in subject:
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None
