"""The firmware bundle is reproducible: two checkouts at different paths build the same bytes."""
import pytest
from source_tree import copy_sources

from vigil_tools import ToolError, firmware_build


def built(root, out):
    firmware_build.build(out / "bundle", root=root)
    firmware_build.build_romfs(out / "bundle", out / "fw.romfs")
    files = {p.relative_to(out / "bundle").as_posix(): p.read_bytes()
             for p in sorted((out / "bundle").rglob("*")) if p.is_file()}
    return files, (out / "fw.romfs").read_bytes()


def test_two_checkouts_at_different_paths_build_identical_bundles_and_images(root, tmp_path):
    short = copy_sources(root, tmp_path / "a")
    # Deeper than the 255 bytes mpy-cross accepts in a path it is given.
    deep = copy_sources(root, tmp_path / ("d" * 120) / ("e" * 120) / "checkout")
    assert len(str(deep / "firmware" / "vigil_fw" / "app.py")) > 255
    files_a, image_a = built(short, tmp_path / "out-a")
    files_b, image_b = built(deep, tmp_path / "out-b" / ("f" * 200))
    assert files_a.keys() == files_b.keys()
    assert "lib/vigil_fw/app.mpy" in files_a and "lib/vigil_protocol/__init__.mpy" in files_a
    assert [name for name in files_a if files_a[name] != files_b[name]] == []
    assert image_a == image_b
    for data in list(files_a.values()) + [image_a]:
        assert str(tmp_path).encode() not in data


def test_the_bytecode_names_each_module_by_its_path_in_the_bundle(root, tmp_path):
    files, _ = built(copy_sources(root, tmp_path / "src"), tmp_path / "out")
    assert b"vigil_fw/app.py" in files["lib/vigil_fw/app.mpy"]
    assert b"vigil_protocol/frames.py" in files["lib/vigil_protocol/frames.mpy"]


def test_a_syntax_error_names_the_source_file(root, tmp_path):
    src = copy_sources(root, tmp_path / "src")
    (src / "firmware" / "vigil_fw" / "app.py").write_text("def broken(:\n")
    with pytest.raises(ToolError) as err:
        firmware_build.build(tmp_path / "out", root=src)
    assert str(src / "firmware" / "vigil_fw" / "app.py") in str(err.value)
    assert "SyntaxError" in str(err.value)
