# A path an operator gives a command (a backup's folder, a restore's source, the TLS and broker
# files' folders, the service's root, the data folder) that is missing, a regular file, or
# cannot be written (under a regular file, or in /proc) is one line naming it, exit status 2,
# never a traceback, and nothing half-written is left behind.
import os
import pwd
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from gateway_harness import GatewayProcess, key_for, write_secret

VIGIL_EXE = str(Path(sys.executable).parent / "vigil")
A = 0x0000000A


def _refused(result, *says):
    """Exit status 2, one line on stderr saying each of `says`, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vigil: "), result.stderr
    for text in says:
        assert text in lines[0], (text, lines[0])
    return lines[0]


@pytest.fixture
def gw(tmp_path):
    write_secret(tmp_path / "gw.pw", "gateway-password\n")
    gateway = GatewayProcess(tmp_path / "gw", 1883,
                             mqtt={"username": "gw", "password_file": str(tmp_path / "gw.pw")})
    gateway.add_device(A, key_for(A))
    return gateway


@pytest.fixture
def afile(tmp_path):
    path = tmp_path / "afile"
    path.write_text("not a folder\n")
    return path


def _listing(path):
    return sorted(str(p.relative_to(path)) for p in Path(path).rglob("*"))


def test_backup_into_a_file_or_an_unwritable_folder(gw, tmp_path, afile):
    before = _listing(tmp_path)
    _refused(gw.cli("backup", str(afile), check=False), str(afile), "not a folder")
    _refused(gw.cli("backup", str(afile / "b"), check=False), str(afile / "b"),
             "Not a directory")
    _refused(gw.cli("backup", "/proc/vigil-x/b", check=False), "/proc/vigil-x",
             "No such file or directory")
    assert afile.read_text() == "not a folder\n"
    assert _listing(tmp_path) == before
    # missing: the data folder has no database
    empty = GatewayProcess(tmp_path / "empty", 1883)
    _refused(empty.cli("backup", str(tmp_path / "b"), check=False), "no gateway database")
    assert not (tmp_path / "b").exists()


def test_a_backup_that_fails_midway_leaves_no_partial_folder(gw, tmp_path):
    # A key file that cannot be copied (here a folder where a key file goes): the backup has
    # made its folders and copied the database's neighbours by then.
    (gw.dir / "data" / "keys" / "zz.key").mkdir()
    dest = tmp_path / "new" / "deep" / "backup"
    _refused(gw.cli("backup", str(dest), check=False), "zz.key", "Is a directory")
    assert not (tmp_path / "new").exists()
    empty = tmp_path / "empty"  # an empty folder given: left as empty as it was
    empty.mkdir()
    _refused(gw.cli("backup", str(empty), check=False), "zz.key")
    assert list(empty.iterdir()) == []
    (gw.dir / "data" / "keys" / "zz.key").rmdir()
    assert "1 devices" in gw.cli("backup", str(empty)).stdout


def test_restore_from_a_missing_or_file_source_and_into_an_unwritable_data_folder(
        gw, tmp_path, afile):
    _refused(gw.cli("restore", str(tmp_path / "missing"), check=False), "missing",
             "not a gateway backup")
    _refused(gw.cli("restore", str(afile), check=False), str(afile), "not a gateway backup")
    backup = tmp_path / "backup"
    gw.cli("backup", str(backup))
    for data_dir, says in [(str(afile / "data"), "Not a directory"),
                           ("/proc/vigil-x/data", "No such file or directory")]:
        target = GatewayProcess(tmp_path / ("t%d" % len(says)), 1883,
                                gateway={"data_dir": data_dir})
        _refused(target.cli("restore", str(backup), check=False), data_dir.rsplit("/", 1)[0],
                 says)
    assert afile.read_text() == "not a folder\n"


def test_a_restore_that_fails_midway_leaves_no_database(gw, tmp_path):
    backup = tmp_path / "backup"
    gw.cli("backup", str(backup))
    target = GatewayProcess(tmp_path / "target", 1883)
    data = target.dir / "data"
    # the database cannot be copied in (a folder where its copy goes): the key files are there
    # by then
    (data / "gateway.db.restoring").mkdir(parents=True)
    _refused(target.cli("restore", str(backup), check=False), "gateway.db.restoring",
             "Is a directory")
    assert sorted(os.listdir(data)) == ["gateway.db.restoring", "gateway.lock", "keys"]
    assert os.listdir(data / "keys") == []  # the key files it copied are gone again


def test_tls_setup_into_a_file_or_an_unwritable_folder(gw, tmp_path, afile):
    before = _listing(tmp_path)
    _refused(gw.cli("tls-setup", "--out", str(afile), check=False), str(afile), "not a folder")
    _refused(gw.cli("tls-setup", "--out", str(afile / "tls"), check=False),
             str(afile / "tls"), "Not a directory")
    _refused(gw.cli("tls-setup", "--out", "/proc/vigil-x/tls", check=False), "/proc/vigil-x",
             "No such file or directory")
    # /proc is there and takes no file: named by the file, not by a temporary name
    line = _refused(gw.cli("tls-setup", "--out", "/proc", check=False), "/proc/ca.key")
    assert ".tmp" not in line
    assert _listing(tmp_path) == before
    # missing: made, with its parents
    assert "made the site CA" in gw.cli("tls-setup", "--out", str(tmp_path / "a" / "tls")).stdout


def test_a_tls_setup_that_fails_midway_leaves_no_half_made_ca(gw, tmp_path):
    out = tmp_path / "tls"
    out.mkdir()
    (out / "broker.key").mkdir()  # the broker's key cannot be written: the CA is made by then
    (out / "broker.key" / "x").write_text("")
    _refused(gw.cli("tls-setup", "--out", str(out), check=False), "broker.key")
    assert sorted(os.listdir(out)) == ["broker.key"]
    shutil.rmtree(out / "broker.key")
    assert "made the site CA" in gw.cli("tls-setup", "--out", str(out)).stdout


def test_broker_config_into_a_file_or_an_unwritable_folder(gw, tmp_path, afile):
    before = _listing(tmp_path)
    _refused(gw.cli("broker-config", "--out", str(afile), check=False), str(afile),
             "not a folder")
    _refused(gw.cli("broker-config", "--out", str(afile / "b"), check=False),
             str(afile / "b"), "Not a directory")
    _refused(gw.cli("broker-config", "--out", "/proc/vigil-x/b", check=False), "/proc/vigil-x",
             "No such file or directory")
    line = _refused(gw.cli("broker-config", "--out", "/proc", check=False), "/proc/passwords")
    assert ".tmp" not in line
    assert _listing(tmp_path) == before
    # missing --tls folder: one line
    _refused(gw.cli("broker-config", "--out", str(tmp_path / "b"), "--tls",
                    str(tmp_path / "missing"), check=False), "missing")
    assert "wrote " in gw.cli("broker-config", "--out", str(tmp_path / "b" / "c")).stdout


@pytest.fixture
def test_user():
    """A system user name no one has; removed after the test if it was made after all."""
    if os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("needs root and useradd: install-service makes a system user")
    name = "vigil-t%s" % uuid.uuid4().hex[:8]
    yield name
    subprocess.run(["userdel", name], capture_output=True)
    subprocess.run(["groupdel", name], capture_output=True)


def test_install_service_under_a_file_or_an_unwritable_root(test_user, tmp_path, afile):
    for root, says in [(str(afile), "Not a directory"), (str(afile / "root"), "Not a directory"),
                       ("/proc/vigil-x", "No such file or directory")]:
        result = subprocess.run([VIGIL_EXE, "gateway", "install-service", "--root", root,
                                 "--user", test_user], capture_output=True, text=True,
                                timeout=60)
        _refused(result, root, says)
        with pytest.raises(KeyError):  # stopped before it made the system user
            pwd.getpwnam(test_user)
    assert afile.read_text() == "not a folder\n"
