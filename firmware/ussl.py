# umqtt.simple (1.3.4) imports `ussl`; MicroPython >= 1.23 names that module `ssl`.
# A TLS socket has no settimeout() of its own, so the raw socket under the most recent
# wrap is kept for the MQTT link to set its timeouts on.
import ssl as _ssl

CERT_REQUIRED = _ssl.CERT_REQUIRED
CERT_NONE = _ssl.CERT_NONE

last_raw_socket = None


def wrap_socket(sock, **kwargs):
    global last_raw_socket
    last_raw_socket = sock
    return _ssl.wrap_socket(sock, **kwargs)
