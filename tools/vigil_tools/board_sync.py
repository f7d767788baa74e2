"""Make files on a board match a set of local files: copy only what differs, then verify.

Rules:
  a file is copied only when its sha256 on the board differs from the local one (or it is
    missing), so a second run over a board that is already right copies nothing;
  files in the folders the bundle owns that are not in the bundle (an old module, a .part left
    by an interrupted copy) are removed;
  every file is checked by reading its hash back from the board after the copy.
"""
import hashlib
import pathlib
from collections import namedtuple

from . import ToolError
from .progress import Progress

# Folders on the board that hold nothing but the firmware bundle, and the bundle's files
# outside them.
BUNDLE_DIRS = ("/lib/vigil_fw", "/lib/vigil_protocol", "/lib/umqtt")
BUNDLE_FILES = ("/lib/ussl.mpy",)

Summary = namedtuple("Summary", "copied unchanged removed bytes_copied")


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def bundle_files(bundle_dir):
    """{board path: bytes} for every file of a built bundle (see firmware_build)."""
    root = pathlib.Path(bundle_dir)
    return {"/" + str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*")) if path.is_file()}


def stale_files(board, wanted, dirs, owned=BUNDLE_FILES):
    stale = []
    for folder in dirs:
        for name in board.listdir(folder):
            path = folder + "/" + name
            if path not in wanted:
                stale.append(path)
    unwanted = [path for path in owned if path not in wanted]
    if unwanted:
        present = board.hashes(unwanted)
        stale += [path for path in unwanted if present.get(path) is not None]
    return stale


def sync(board, files, dirs=BUNDLE_DIRS, label="copying", stream=None):
    """Bring `files` ({board path: bytes}) onto the board; returns a Summary."""
    local = {path: sha256_hex(data) for path, data in files.items()}
    on_board = board.hashes(sorted(files))
    changed = [path for path in sorted(files) if on_board.get(path) != local[path]]
    stale = stale_files(board, files, dirs)
    for path in stale:
        board.remove(path)
    total = sum(len(files[path]) for path in changed)
    if changed:
        bar = Progress(total, label, stream)
        done = 0
        for path in changed:
            def advance(written, _size, base=done, path=path):
                bar.update(base + written, path)
            board.write_file(path, files[path], progress=advance)
            done += len(files[path])
            bar.item_done(done, path)
        bar.finish()
    verify(board, local)
    return Summary(len(changed), len(files) - len(changed), len(stale), total)


def verify(board, local_hashes):
    """Read every hash back from the board; ToolError naming the files that differ."""
    on_board = board.hashes(sorted(local_hashes))
    wrong = [path for path, digest in sorted(local_hashes.items())
             if on_board.get(path) != digest]
    if wrong:
        raise ToolError("verification failed: %s on the board differ from what was sent; run "
                        "the same command again" % ", ".join(wrong))
