"""The VS Code extension builds, lints, passes its unit tests and packages to a .vsix (npm from the registry)."""
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

EXT = Path(__file__).resolve().parent.parent / "vscode-extension"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")
def test_extension_builds_and_packages():
    done = subprocess.run(["bash", str(EXT / "build.sh")], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    vsix = Path(done.stdout.strip().splitlines()[-1])
    assert vsix.suffix == ".vsix" and vsix.is_file()
    names = zipfile.ZipFile(vsix).namelist()
    assert "extension/package.json" in names
    assert any(n.startswith("extension/out/") and n.endswith("extension.js") for n in names)
    assert any("node_modules/vscode-languageclient/" in n for n in names)
