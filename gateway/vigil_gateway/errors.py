# One root exception for the gateway. Each says what went wrong in words an operator can act on,
# and never carries key material or passwords.


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is wrong; `key` names the setting (e.g. "mqtt.port")."""

    def __init__(self, key, message):
        GatewayError.__init__(self, "%s: %s" % (key, message))
        self.key = key


class RegistryError(GatewayError):
    """A device registry operation cannot be done (unknown device, bad key file, ...)."""


class StoreError(GatewayError):
    """The durable store cannot write: nothing is acknowledged until it can."""
