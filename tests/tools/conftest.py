import pytest

from vigil_cli import vigil
from vigil_tools.virtual_board import VirtualBoard


@pytest.fixture
def board(tmp_path):
    """A virtual wearable on a pty; its flash is tmp_path/flash."""
    with VirtualBoard(tmp_path / "flash") as vb:
        yield vb


@pytest.fixture
def device_file(tmp_path):
    path = tmp_path / "device.json"
    proc = vigil("keygen", "--out", path)
    assert proc.returncode == 0, proc.stderr
    return path


@pytest.fixture
def gateway_config(tmp_path):
    """A gateway config whose registry lives in tmp_path/gateway."""
    path = tmp_path / "gateway.toml"
    path.write_text('[gateway]\ndata_dir = "gateway"\n')
    return path
