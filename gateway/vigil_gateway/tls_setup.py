# A site's TLS material for the broker, made with `cryptography`: a site CA, the broker's
# certificate signed by it, and the CA file wearables and the gateway are given to verify the
# broker (`vigil gateway tls-setup`).
#
# Rules:
#   the CA is made once and then kept: every wearable provisioned trusts it, so running the
#   command again issues a new broker certificate (a renewal, or new names) under the same CA;
#   a CA key or certificate that cannot be read, or that do not match, stops the command: a
#   new CA would lock every wearable out; a run that fails leaves no half-made CA (nor a
#   folder it made);
#   the CA key is this user's alone (0600); the broker's key is readable by group mosquitto
#   too (0640) where that group exists, since Debian's broker reads it as user mosquitto;
#   the broker's certificate names every host name and address wearables and the gateway use
#   to reach it (the gateway checks the host name), and always localhost and 127.0.0.1.
import datetime
import ipaddress
import os
import shutil
import socket

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .broker_config import broker_gid, write_file
from .errors import GatewayError

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
BROKER_CERT = "broker.pem"
BROKER_KEY = "broker.key"
WEARABLES_CA = "wearables-ca.pem"  # what provisioning puts on each wearable (mqtt.ca_file)
CA_DAYS = 3650
# Below the 398 days clients may enforce for server certificates.
BROKER_DAYS = 397


class TlsSetupError(GatewayError):
    pass


# Always named too: the gateway on the broker's machine connects by loopback.
LOCAL_NAMES = ("localhost", "127.0.0.1")


def default_names():
    """This machine's name (the names always added come after it)."""
    fqdn = socket.getfqdn()
    return [fqdn] if fqdn and fqdn not in LOCAL_NAMES else []


def with_local(names):
    return list(dict.fromkeys(list(names) + list(LOCAL_NAMES)))


def _san(names):
    entries = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _usage(**on):
    flags = dict(digital_signature=False, key_cert_sign=False, crl_sign=False,
                 content_commitment=False, key_encipherment=False, data_encipherment=False,
                 key_agreement=False, encipher_only=False, decipher_only=False)
    flags.update(on)
    return x509.KeyUsage(**flags)


def _pem_key(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_cert(cert):
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _new_ca(site, now):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name("%s Vigil CA" % site))
            .issuer_name(_name("%s Vigil CA" % site)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_usage(key_cert_sign=True, crl_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _load_ca(cert_path, key_path):
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), None)
    except OSError as exc:
        raise TlsSetupError("cannot read the site CA (%s): %s; the CA wearables trust is "
                            "never replaced" % (exc.filename, exc.strerror)) from None
    except ValueError as exc:
        raise TlsSetupError("the site CA in %s is not PEM (%s); the CA wearables trust is "
                            "never replaced" % (os.path.dirname(cert_path), exc)) from None
    if cert.public_key().public_numbers() != key.public_key().public_numbers():
        raise TlsSetupError("%s is not the key of %s" % (key_path, cert_path))
    return key, cert


def _broker_cert(ca_key, ca_cert, names, now):
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(names[0]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(min(now + datetime.timedelta(days=BROKER_DAYS),
                                 ca_cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(_san(names), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def setup(out_dir, names, site="Site"):
    """Make (or keep) the site CA in out_dir and issue the broker's certificate for `names`.
    Returns {"ca": path, "ca_key": path, "cert": path, "key": path, "wearables_ca": path,
    "ca_made": bool, "names": names, "not_after": datetime}."""
    names = with_local(names)
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise TlsSetupError("%s is not a folder" % out_dir)
    top = out_dir  # the first folder on the way that this run makes, if any
    while not os.path.exists(os.path.dirname(top)) and os.path.dirname(top) != top:
        top = os.path.dirname(top)
    folder_made = not os.path.exists(top)
    os.makedirs(out_dir, mode=0o755, exist_ok=True)
    paths = {k: os.path.join(out_dir, v) for k, v in (
        ("ca", CA_CERT), ("ca_key", CA_KEY), ("cert", BROKER_CERT), ("key", BROKER_KEY),
        ("wearables_ca", WEARABLES_CA))}
    now = datetime.datetime.now(datetime.timezone.utc)
    made = not os.path.exists(paths["ca"]) and not os.path.exists(paths["ca_key"])
    written = []

    def write(name, text, gid, mode=0o600):
        write_file(paths[name], text, gid, mode=mode)
        written.append(paths[name])

    try:
        if made:
            ca_key, ca_cert = _new_ca(site, now)
            write("ca_key", _pem_key(ca_key), None)
            write("ca", _pem_cert(ca_cert), None, mode=0o644)
        else:
            ca_key, ca_cert = _load_ca(paths["ca"], paths["ca_key"])
        key, cert = _broker_cert(ca_key, ca_cert, list(names), now)
        gid = broker_gid()
        write("key", _pem_key(key), gid)
        write("cert", _pem_cert(cert), None, mode=0o644)
        write("wearables_ca", _pem_cert(ca_cert), None, mode=0o644)
    except BaseException:
        # Nothing half made: a CA made now is no wearable's yet (a key without its certificate
        # would stop every later run), nor is a folder made now. With a kept CA, a run again
        # issues the broker's key and certificate afresh.
        if folder_made:
            shutil.rmtree(top, ignore_errors=True)
        elif made:
            for path in written:
                os.unlink(path)
        raise
    return dict(paths, ca_made=made, names=list(names), not_after=cert.not_valid_after_utc)


def certificate_names(cert_path):
    """The DNS names and IP addresses a certificate (PEM) is for, as text; [] when it names
    none (or cannot be read: signed_by() says so first)."""
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, x509.ExtensionNotFound):
        return []
    return san.get_values_for_type(x509.DNSName) + [
        str(a) for a in san.get_values_for_type(x509.IPAddress)]


def signed_by(cert_path, ca_path):
    """Whether the certificate in cert_path was issued by the CA in ca_path (both PEM)."""
    try:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(ca_path, "rb") as f:
            ca = x509.load_pem_x509_certificate(f.read())
        cert.verify_directly_issued_by(ca)
        return True
    except (OSError, ValueError, TypeError, InvalidSignature):
        return False
