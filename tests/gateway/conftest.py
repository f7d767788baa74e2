# Fixtures for the gateway tests; the helpers they use live in gateway_harness.py.
import pytest

from gateway_harness import Device, GatewayProcess


@pytest.fixture
def gateway_factory(tmp_path):
    """make(broker_port, **sections) -> a GatewayProcess (not started); all stopped after."""
    made = []

    def make(broker_port, **sections):
        gw = GatewayProcess(tmp_path / ("gateway%d" % len(made)), broker_port, **sections)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.stop()


@pytest.fixture
def devices():
    """make(port, device_id, key, ...) -> a connected Device; all closed after the test."""
    made = []

    def make(*args, **kwargs):
        device = Device(*args, **kwargs)
        made.append(device)
        return device

    yield make
    for device in made:
        device.close()
