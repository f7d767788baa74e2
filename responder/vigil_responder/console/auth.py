# Responders' accounts and sessions.
#   passwords  scrypt (hashlib; n=2^14, r=8, p=1, 16-byte salt), compared in constant time;
#              accounts are made from the CLI only (vigil responder user add)
#   sessions   a random 32-byte token in an HttpOnly, SameSite=Strict cookie (Secure over
#              TLS); the store keeps its SHA-256 only, so a copy of the database logs nobody in
#   CSRF       every POST but the login carries the session's own CSRF token (a form field or
#              the X-CSRF-Token header), compared in constant time
import base64
import hashlib
import hmac
import secrets
import time

COOKIE = "vigil_console"
SESSION_S = 12 * 3600
_N, _R, _P = 1 << 14, 8, 1


def hash_password(password):
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "scrypt$%d$%d$%d$%s$%s" % (_N, _R, _P, _b64(salt), _b64(digest))


def check_password(stored, password):
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        assert scheme == "scrypt"
        given = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r),
                               p=int(p), dklen=32)
    except (ValueError, AssertionError, AttributeError):
        return False
    return hmac.compare_digest(given, _unb64(digest))


def _b64(data):
    return base64.b64encode(data).decode()


def _unb64(text):
    return base64.b64decode(text)


def _token_sha(token):
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    def __init__(self, store):
        self.store = store
        # a fixed hash to check a password against when the name is unknown (same work)
        self._dummy = hash_password(secrets.token_hex(8))

    def login(self, name, password):
        """The new session's cookie token, or None."""
        stored = self.store.user_hash(name)
        ok = check_password(stored or self._dummy, password)
        if stored is None or not ok:
            return None
        token = secrets.token_urlsafe(32)
        self.store.add_session(_token_sha(token), name, secrets.token_urlsafe(24),
                               time.time() + SESSION_S)
        return token

    def lookup(self, token):
        """(name, csrf token) for a live session, else None."""
        if not token:
            return None
        return self.store.session(_token_sha(token), time.time())

    def logout(self, token):
        if token:
            self.store.drop_session(_token_sha(token))


def csrf_ok(expected, given):
    return bool(given) and hmac.compare_digest(expected.encode(), given.encode())
