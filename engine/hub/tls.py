"""TLS on the hub's listeners (docs/contract.md section 10, "TLS"; docs/server.md, "TLS").

`load_server_tls` reads and checks the operator's files once, before the hub
opens its store, and builds two server contexts from the standard `ssl`
module: one for the HTTP gateway and the framed TCP listener, which also
requires a client certificate when a client CA is given, and one for the
admin listener, which never asks for one (docs/server.md says why). Every
refusal is a `TLSConfigError` whose text is one line naming the option, the
file and the problem. `client_context` builds the matching client side for
engine.hub.client's framed clients, the tests and scripts.

Both sides speak TLS 1.2 or later, with the ciphers and options Python's
defaults give (no compression, no SSLv2/3, the server's cipher preference).
"""
from __future__ import annotations

import base64
import dataclasses
import datetime
import functools
import re
import ssl

TLS_VERSION_MIN = ssl.TLSVersion.TLSv1_2
# The framed TCP listener's bound on a handshake; aiohttp gives the gateway and
# the admin listener asyncio's default, which is the same 60 s.
HANDSHAKE_TIMEOUT_S = 60.0
# A certificate chain, a key or a CA bundle is a few kB (all of Mozilla's roots: about 220 kB).
PEM_FILE_BYTES_MAX = 4 * 1024 * 1024

_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----\s*(.*?)-----END CERTIFICATE-----", re.S)
_PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN ([A-Z0-9 ]*)PRIVATE KEY-----")


class TLSConfigError(ValueError):
    """A TLS file or option refused at start; the text is one line for the operator."""


@dataclasses.dataclass(frozen=True)
class Validity:
    """The validity period of one certificate, in UTC (RFC 5280 section 4.1.2.5)."""

    not_before: datetime.datetime
    not_after: datetime.datetime


@dataclasses.dataclass(frozen=True)
class ServerTLS:
    """The checked TLS configuration of `yidi serve`."""

    context: ssl.SSLContext  # the gateway and the framed TCP listener
    admin_context: ssl.SSLContext  # the admin listener: never asks for a client certificate
    cert_file: str
    validity: Validity  # of the hub's own certificate, the first one in cert_file
    client_ca_file: str | None = None
    client_ca_validity: tuple[Validity, ...] = ()

    def warnings(self, now: datetime.datetime | None = None) -> list[str]:
        """What an operator should know before clients do: a certificate not valid at `now`."""
        now = now or datetime.datetime.now(datetime.timezone.utc)
        out = []
        bad = _not_valid(self.validity, now)
        if bad:
            out.append(f"--tls-cert {self.cert_file}: {bad}: clients will refuse the handshake")
        for i, v in enumerate(self.client_ca_validity):
            bad = _not_valid(v, now)
            if bad:
                out.append(f"--tls-client-ca {self.client_ca_file}: certificate {i + 1}: {bad}: "
                           f"client certificates it signed will be refused")
        return out

    def describe(self) -> str:
        """The start-up line's account of the configuration."""
        text = f"certificate {self.cert_file} valid until {_utc(self.validity.not_after)}"
        if self.client_ca_file is None:
            return text + "; no client certificates asked for"
        return text + (f"; client certificates signed by {self.client_ca_file} required on tcp and http, "
                       f"not on admin")


def load_server_tls(cert_file: str | None, key_file: str | None,
                    client_ca_file: str | None = None) -> ServerTLS | None:
    """The TLS configuration of `--tls-cert`, `--tls-key` and `--tls-client-ca`; None without them.

    Raises TLSConfigError when an option lacks its partner, a file cannot be
    read, is not PEM, holds an encrypted key or a key that does not match the
    certificate, or when OpenSSL refuses it for another reason.
    """
    if cert_file is None and key_file is None:
        if client_ca_file is not None:
            raise TLSConfigError("--tls-client-ca needs --tls-cert and --tls-key (the hub's own certificate)")
        return None
    if key_file is None:
        raise TLSConfigError("--tls-cert needs --tls-key (the certificate's private key)")
    if cert_file is None:
        raise TLSConfigError("--tls-key needs --tls-cert (the certificate of that key)")
    validity = _certificates("--tls-cert", cert_file)[0]
    _private_key("--tls-key", key_file)
    context = _server_context()
    admin_context = _server_context()
    for ctx in (context, admin_context):
        try:
            ctx.load_cert_chain(cert_file, key_file, password=functools.partial(_no_password, key_file))
        except ssl.SSLError as e:
            if "KEY_VALUES_MISMATCH" in str(e):
                raise TLSConfigError(f"--tls-key {key_file}: does not match the certificate in --tls-cert "
                                     f"{cert_file}") from None
            raise TLSConfigError(f"--tls-cert {cert_file} with --tls-key {key_file}: refused by OpenSSL: "
                                 f"{_reason(e)}") from None
        except OSError as e:  # the file went away between our read and OpenSSL's
            raise TLSConfigError(f"--tls-cert {cert_file} or --tls-key {key_file}: cannot read it: "
                                 f"{e.strerror or e}") from None
    if client_ca_file is None:
        return ServerTLS(context, admin_context, cert_file, validity)
    ca_validity = _certificates("--tls-client-ca", client_ca_file)
    try:
        context.load_verify_locations(cafile=client_ca_file)
    except ssl.SSLError as e:
        raise TLSConfigError(f"--tls-client-ca {client_ca_file}: refused by OpenSSL: {_reason(e)}") from None
    except OSError as e:
        raise TLSConfigError(f"--tls-client-ca {client_ca_file}: cannot read it: {e.strerror or e}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    return ServerTLS(context, admin_context, cert_file, validity, client_ca_file, tuple(ca_validity))


def client_context(ca_file: str | None = None, cert_file: str | None = None,
                   key_file: str | None = None) -> ssl.SSLContext:
    """A client's context for a hub on TLS: trusts `ca_file` (else the system's roots), checks the
    hub's name, speaks TLS 1.2 or later, and presents `cert_file`/`key_file` when given."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.minimum_version = TLS_VERSION_MIN
    if cert_file is not None:
        ctx.load_cert_chain(cert_file, key_file)
    return ctx


# ---------------------------------------------------------------- checks of the files

def _server_context() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = TLS_VERSION_MIN
    return ctx


def _no_password(key_file: str) -> bytes:
    # Reached only for an encrypted key that _private_key did not recognise; without a
    # password callback OpenSSL would prompt for one on the terminal.
    raise TLSConfigError(f"--tls-key {key_file}: an encrypted private key: yidi reads unencrypted keys only")


def _read(option: str, path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(PEM_FILE_BYTES_MAX + 1)
    except OSError as e:
        raise TLSConfigError(f"{option} {path}: cannot read it: {e.strerror or e}") from None
    if len(data) > PEM_FILE_BYTES_MAX:
        raise TLSConfigError(f"{option} {path}: more than {PEM_FILE_BYTES_MAX} bytes, not a PEM file")
    return data


def _certificates(option: str, path: str) -> list[Validity]:
    """The validity of every PEM certificate in the file, in file order; at least one."""
    blocks = _PEM_CERTIFICATE.findall(_read(option, path))
    if not blocks:
        raise TLSConfigError(f"{option} {path}: not a PEM certificate (no -----BEGIN CERTIFICATE----- block)")
    out = []
    for i, block in enumerate(blocks):
        try:
            out.append(_validity(base64.b64decode(b"".join(block.split()), validate=True)))
        except ValueError:  # binascii.Error is a ValueError
            raise TLSConfigError(f"{option} {path}: certificate {i + 1} is not a valid X.509 certificate "
                                 f"in PEM") from None
    return out


def _private_key(option: str, path: str) -> None:
    data = _read(option, path)
    m = _PEM_PRIVATE_KEY.search(data)
    if m is None:
        raise TLSConfigError(f"{option} {path}: not a PEM private key (no -----BEGIN PRIVATE KEY----- block)")
    if b"ENCRYPTED" in m.group(1) or b"Proc-Type: 4,ENCRYPTED" in data:
        raise TLSConfigError(f"{option} {path}: an encrypted private key: yidi reads unencrypted keys only "
                             f"(protect the file by its permissions)")


def _reason(e: ssl.SSLError) -> str:
    return e.reason or e.strerror or str(e)


def _not_valid(v: Validity, now: datetime.datetime) -> str:
    if now < v.not_before:
        return f"not valid before {_utc(v.not_before)}"
    if now > v.not_after:
        return f"expired on {_utc(v.not_after)}"
    return ""


def _utc(t: datetime.datetime) -> str:
    return t.strftime("%Y-%m-%d %H:%M UTC")


# ---------------------------------------------------------------- the validity field of a DER certificate

def _der(buf: bytes, off: int) -> tuple[int, int, int]:
    """The DER element at `off`: (tag, first content byte, end). ValueError when it does not fit."""
    if off + 2 > len(buf):
        raise ValueError("truncated")
    tag, n = buf[off], buf[off + 1]
    off += 2
    if n & 0x80:
        width = n & 0x7F
        if not 1 <= width <= 4 or off + width > len(buf):
            raise ValueError("bad length")
        n = int.from_bytes(buf[off:off + width], "big")
        off += width
    if off + n > len(buf):
        raise ValueError("truncated")
    return tag, off, off + n


def _validity(der: bytes) -> Validity:
    """Certificate -> TBSCertificate -> (version, serial, signature, issuer) -> Validity (RFC 5280 4.1)."""
    tag, start, _ = _der(der, 0)
    if tag != 0x30:
        raise ValueError("not a SEQUENCE")
    tag, off, _ = _der(der, start)
    if tag != 0x30:
        raise ValueError("no TBSCertificate")
    tag, _, end = _der(der, off)
    if tag == 0xA0:  # [0] EXPLICIT version
        off = end
    for want in (0x02, 0x30, 0x30):  # serialNumber, signature, issuer
        tag, _, off = _der(der, off)
        if tag != want:
            raise ValueError("unexpected field")
    tag, off, _ = _der(der, off)
    if tag != 0x30:
        raise ValueError("no Validity")
    tag, s, e = _der(der, off)
    not_before = _der_time(tag, der[s:e])
    tag, s2, e2 = _der(der, e)
    return Validity(not_before, _der_time(tag, der[s2:e2]))


def _der_time(tag: int, text: bytes) -> datetime.datetime:
    s = text.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ: years 1950-2049
        t = datetime.datetime.strptime(s, "%y%m%d%H%M%SZ")
        if t.year >= 2050:
            t = t.replace(year=t.year - 100)
    elif tag == 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        t = datetime.datetime.strptime(s, "%Y%m%d%H%M%SZ")
    else:
        raise ValueError("not a Time")
    return t.replace(tzinfo=datetime.timezone.utc)
