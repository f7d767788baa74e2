# Who a DC-09 message is about: the account and zone the ARC knows the wearer by.
#
# Rules:
#   scheme "site" (the default): one account for the site, one zone per wearer (the wearer
#   profile's zone);
#   scheme "device": each wearable its own account, its device id in hex (8 digits), zone 001,
#   as lone-worker ARCs identify devices;
#   a wearable with no profile under "site" never falls back to zone 001 of the site account
#   (another wearer's, perhaps): it is reported under its own device account, zone 001, and
#   `derived` says so, for the operator to be told;
#   a profile with an account of its own (wearer set --dc09-account) is reported under it, with
#   the profile's zone, whatever the scheme: the ARC gave that wearer its account;
#   key, line and receiver number are the configured account's in every case.
from . import dc09

SCHEMES = ("site", "device")


def device_account(device_id):
    return "%08X" % device_id


def identity(scheme, account, device_id, profile):
    """(dc09.Account, zone, derived) for a message about `device_id`; `profile` is its wearer
    profile (wearers.get) or None."""
    if profile is not None and getattr(profile, "dc09_account", ""):
        own = dc09.Account(profile.dc09_account, account.key, account.line, account.receiver)
        return own, profile.zone or 1, False
    if scheme == "site" and profile is not None:
        return account, profile.zone or 1, False
    own = dc09.Account(device_account(device_id), account.key, account.line, account.receiver)
    return own, 1, scheme == "site"
