"""Install pinned micropython-lib packages for the MicroPython unix port.

    python tests/mpy/fetch_libs.py DEST

Reads mpy-requirements.txt beside this file; downloads each tarball from PyPI, refuses it if
its sha256 differs from the pinned one, and unpacks its .py modules into DEST. Re-running with
nothing changed downloads nothing.
"""
import hashlib
import io
import pathlib
import sys
import tarfile
import urllib.request

HERE = pathlib.Path(__file__).resolve().parent


def pins():
    for line in (HERE / "mpy-requirements.txt").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, version, url, sha256 = line.split()
            yield name, version, url, sha256


def install(dest: pathlib.Path, name, version, url, sha256):
    marker = dest / ".installed" / f"{name}-{version}"
    if marker.exists():
        return False
    with urllib.request.urlopen(url, timeout=60) as reply:
        data = reply.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{name} {version}: sha256 {digest} does not match the pin {sha256}")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            parts = pathlib.PurePosixPath(member.name).parts[1:]  # drop "name-version/"
            if not member.isfile() or not parts or parts[-1] == "setup.py" \
                    or not parts[-1].endswith(".py") or ".." in parts:
                continue
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(url + "\n")
    return True


def main():
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    dest = pathlib.Path(sys.argv[1])
    for pin in pins():
        if install(dest, *pin):
            print(f"installed {pin[0]} {pin[1]} into {dest}")


if __name__ == "__main__":
    main()
