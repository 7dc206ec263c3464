"""HTTPS both ways, with certificates from a CA the tests make (trustme).

Buyers: an https:// buyer is verified (hostname and chain); ``ca_file``/``--ca-file``
adds a private CA. One that does not verify is ``error:tls`` and is never sold to.
Sellers: ``serve --tls-cert --tls-key`` answers over HTTPS itself.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any, AsyncIterator

import aiohttp
import pytest
import trustme

from pingpost.buyers import tls_context
from tests.support.buyers import BuyerServer, accept, bid
from tests.support.exchange import LEAD, PING, SELLER_KEY, base_config
from tests.helpers_process import Served


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context


@pytest.fixture
async def https_buyers(ca: trustme.CA) -> AsyncIterator[BuyerServer]:
    """A buyer at https://localhost:P with a certificate the test CA signed."""
    server = BuyerServer()
    await server.start(ssl_context=server_context(ca.issue_cert("localhost", "127.0.0.1")))
    yield server
    await server.stop()


def untrusted(ca: trustme.CA) -> ssl.SSLContext:
    """A certificate for localhost that another CA signed."""
    return server_context(trustme.CA().issue_cert("localhost", "127.0.0.1"))


def wrong_name(ca: trustme.CA) -> ssl.SSLContext:
    """Signed by the trusted CA, but for another host name."""
    return server_context(ca.issue_cert("buyer.example.org"))


def self_signed(ca: trustme.CA) -> ssl.SSLContext:
    """A self-signed certificate for localhost: nobody vouches for it."""
    import datetime
    import ipaddress
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    directory = Path(tempfile.mkdtemp())
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                          serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(directory / "cert.pem"), str(directory / "key.pem"))
    return context


def campaign(server: BuyerServer, cid: str, buyer: str = "b1", **extra: Any) -> dict[str, Any]:
    return {"id": cid, "buyer": buyer, "ping_url": server.ping_url(cid), "post_url": server.post_url(cid),
            "timeout_ms": 500, **extra}


def outcomes(trace: dict[str, Any]) -> dict[str, str]:
    return {c["campaign_id"]: c["outcome"] for c in trace["campaigns"]}


async def test_https_buyer_with_private_ca(buyers, https_buyers, exchange, ca_file):
    https_buyers.script("secure", ping=bid(4.0, "s1"), post=accept("s-lead"))
    assert https_buyers.url.startswith("https://localhost:")
    ex = await exchange(base_config(buyers, campaign(https_buyers, "secure")), ca_file=ca_file)
    status, answered = await ex.ping(PING)
    assert status == 200 and answered["price"] == 4.0
    status, sold = await ex.post(answered["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold"
    assert https_buyers.posts["secure"][0].body["bid_id"] == "s1"


async def test_private_ca_is_not_trusted_without_ca_file(buyers, https_buyers, exchange):
    https_buyers.script("secure", ping=bid(4.0))
    ex = await exchange(base_config(buyers, campaign(https_buyers, "secure")))
    status, answered = await ex.ping(PING)
    assert status == 200 and answered["status"] == "no_bid"
    _, trace = await ex.trace(answered["ping_id"])
    assert outcomes(trace) == {"secure": "error:tls"}


@pytest.mark.parametrize("bad_tls", [untrusted, wrong_name, self_signed])
async def test_unverified_buyer_is_never_sold_to(buyers, exchange, ca, ca_file, bad_tls):
    server = BuyerServer()
    await server.start(ssl_context=bad_tls(ca))
    try:
        await _never_sold_to(server, buyers, exchange, ca_file)
    finally:
        await server.stop()


async def _never_sold_to(server: BuyerServer, buyers: BuyerServer, exchange: Any, ca_file: str) -> None:
    server.script("shady", ping=bid(20.0), post=accept())
    buyers.script("plain", ping=bid(2.0), post=accept())
    ex = await exchange(base_config(buyers, campaign(server, "shady"), campaign(buyers, "plain", "b2")),
                        ca_file=ca_file)
    status, answered = await ex.ping(PING)
    assert status == 200 and answered["price"] == 2.0
    _, trace = await ex.trace(answered["ping_id"])
    assert outcomes(trace) == {"shady": "error:tls", "plain": "bid"}
    status, sold = await ex.post(answered["ping_id"], LEAD)
    assert status == 200 and sold["status"] == "sold" and sold["price"] == 2.0 and sold["attempts"] == 1
    assert server.pings == {} and server.posts == {}, "nothing crossed an unverified connection"


def test_ca_file_adds_to_the_system_cas(ca_file):
    """A private CA for one buyer must not cut off the public ones."""
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    assert tls_context(ca_file).cert_store_stats()["x509_ca"] == system + 1


async def test_serve_answers_sellers_over_https(tmp_path, ca, ca_file, https_buyers):
    """``serve --tls-cert --tls-key --ca-file``: HTTPS to the seller and to an https buyer."""
    https_buyers.script("secure", ping=bid(3.0), post=accept())
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    server_cert.private_key_pem.write_to_path(str(key_path))
    cert_path.write_bytes(b"".join(blob.bytes() for blob in server_cert.cert_chain_pems))
    config = base_config(https_buyers, campaign(https_buyers, "secure"), auction_timeout_ms=1000)
    served = await Served.start(tmp_path, config, "--tls-cert", str(cert_path), "--tls-key", str(key_path),
                                "--ca-file", ca_file)
    try:
        assert served.listening == f"listening on https://127.0.0.1:{served.port}"
        client_tls = ssl.create_default_context(cafile=ca_file)
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=client_tls)) as session:
            async with session.post(f"https://127.0.0.1:{served.port}/v1/ping", json=PING,
                                    headers={"Authorization": f"Bearer {SELLER_KEY}"}) as response:
                assert response.status == 200
                answered = await response.json()
            assert answered["status"] == "bid" and answered["price"] == 3.0
            with pytest.raises(aiohttp.ClientError):  # plain HTTP is not spoken on that port
                async with session.get(f"http://127.0.0.1:{served.port}/healthz") as response:
                    assert response.status != 200
    finally:
        served.signal()
        assert await served.wait() == 0
