# Mosquitto password and ACL files made from the registry (protocol/SPEC.md §9).
#
# Rules:
#   each active device may publish only to <prefix>/up/<dev> and <prefix>/status/<dev> and read
#   only <prefix>/down/<dev> (patterns on %u, the MQTT username = the device's 8 hex digits);
#   the gateway's own user reads every uplink and status topic and writes every downlink topic;
#   revoked devices and devices without a broker password get no password line: they cannot
#   connect at all;
#   passwords are stored as Mosquitto's PBKDF2-SHA512 hashes ($7$), never in clear.
import base64
import hashlib
import os
import secrets

PBKDF2_ITERATIONS = 10000
_SALT_LEN = 12


def mosquitto_hash(password, iterations=PBKDF2_ITERATIONS, salt=None):
    """A password line's hash in the format mosquitto_passwd writes for Mosquitto 2."""
    salt = secrets.token_bytes(_SALT_LEN) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return "$7$%d$%s$%s" % (iterations, base64.b64encode(salt).decode(),
                            base64.b64encode(digest).decode())


def acl_text(prefix, gateway_user):
    lines = ["# Written by `vigil gateway broker-config`: devices see only their own topics.",
             "pattern write %s/up/%%u" % prefix,
             "pattern write %s/status/%%u" % prefix,
             "pattern read %s/down/%%u" % prefix,
             ""]
    if gateway_user:
        lines += ["user %s" % gateway_user,
                  "topic read %s/up/#" % prefix,
                  "topic read %s/status/#" % prefix,
                  "topic write %s/down/#" % prefix,
                  ""]
    return "\n".join(lines)


def password_text(devices, gateway_user, gateway_password):
    from .registry import ACTIVE, device_hex  # the registry imports this module too

    lines = []
    if gateway_user and gateway_password:
        lines.append("%s:%s" % (gateway_user, mosquitto_hash(gateway_password)))
    for device in devices:
        if device.state == ACTIVE and device.mqtt_password_hash:
            lines.append("%s:%s" % (device_hex(device.device_id), device.mqtt_password_hash))
    return "\n".join(lines) + "\n"


def write_broker_files(out_dir, devices, prefix, gateway_user, gateway_password):
    """Write `passwords` and `acl` into out_dir (mode 0600); return their paths."""
    from .registry import write_private_file

    os.makedirs(out_dir, exist_ok=True)
    passwords = os.path.join(out_dir, "passwords")
    acl = os.path.join(out_dir, "acl")
    write_private_file(passwords, password_text(devices, gateway_user, gateway_password))
    write_private_file(acl, acl_text(prefix, gateway_user))
    return passwords, acl
