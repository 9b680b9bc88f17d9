"""Two HTTPS sites on loopback for cross-site tests: the studio over TLS, and another site's static page.

`python -m tests.tls_sites studio PORT CERT KEY` serves `create_app(Settings.from_env())` over TLS (the
studio's own uvicorn terminating it, so requests are `https` as behind any TLS front);
`python -m tests.tls_sites static PORT CERT KEY FOLDER` serves FOLDER's files over TLS.
"""

from __future__ import annotations

import datetime
import functools
import http.server
import ipaddress
import ssl
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_certificate(folder: Path, names: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate for `names` (and 127.0.0.1); returns the certificate and key files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alternative = [x509.DNSName(name) for name in names] + [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName(alternative), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def serve_studio(port: int, cert_file: str, key_file: str) -> None:
    import uvicorn

    from mochi_app.config import Settings
    from mochi_app.web import create_app

    settings = Settings.from_env()
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=port, ssl_certfile=cert_file, ssl_keyfile=key_file, log_level="warning")


def serve_static(port: int, cert_file: str, key_file: str, folder: str) -> None:
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=folder)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.serve_forever()


def main(argv: list[str]) -> None:
    kind, port, cert_file, key_file, *rest = argv
    if kind == "studio":
        serve_studio(int(port), cert_file, key_file)
    else:
        serve_static(int(port), cert_file, key_file, *rest)


if __name__ == "__main__":
    main(sys.argv[1:])
