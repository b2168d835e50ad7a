"""`make install` and `make uninstall` (packaging): PREFIX and DESTDIR put the
binary, the man page, the example configuration and the systemd units of
deploy/ where they belong; the man page renders without warnings, the
installed binary runs, and systemd accepts the units."""

import os
import re
import shutil
import subprocess

import pytest

from harness import repo_root

FILES = [
    "bin/ficus",
    "share/man/man1/ficus.1",
    "share/doc/ficus/LICENSE",
    "share/doc/ficus/CHANGELOG.md",
    "share/doc/ficus/examples/gateway.yaml",
    "share/doc/ficus/examples/shops.txt",
    "lib/systemd/system/ficus.service",
    "lib/systemd/system/ficus@.service",
]


def make(*args, timeout=600):
    # A make that runs this test passes its variables (MODE=asan, -j) through
    # MAKEFLAGS; install always takes the optimised ./ficus.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = subprocess.run(["make", "-s", "MODE=release", *args], cwd=repo_root(), env=env,
                       capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"make {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def test_install_with_destdir_and_uninstall(tmp_path):
    dest = tmp_path / "stage"
    make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    root = dest / "usr"
    for f in FILES:
        assert (root / f).is_file(), f"{f} not installed; have {sorted(map(str, dest.rglob('*')))}"
    assert os.access(root / "bin/ficus", os.X_OK)
    assert oct((root / "share/man/man1/ficus.1").stat().st_mode & 0o777) == "0o644"
    # The staged binary runs and is the version of the tree.
    r = subprocess.run([str(root / "bin/ficus"), "version"], capture_output=True, text=True,
                       timeout=30)
    version = (repo_root() / "VERSION").read_text().strip()
    assert r.returncode == 0 and r.stdout.startswith(f"ficus {version}\n"), r.stdout + r.stderr
    # The units run PREFIX's binary (not DESTDIR's, a staging directory).
    for unit in ("ficus.service", "ficus@.service"):
        text = (root / "lib/systemd/system" / unit).read_text()
        assert "ExecStart=/usr/bin/ficus run -c /etc/ficus/ficus.yaml" in text, text
        assert "ExecReload=/bin/kill -HUP $MAINPID" in text
        for key in ("NoNewPrivileges=yes", "ProtectSystem=strict", "LimitNOFILE="):
            assert key in text, f"{unit} lacks {key}"
    make("uninstall", f"DESTDIR={dest}", "PREFIX=/usr")
    left = [str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()]
    assert left == [], f"uninstall left {left}"


def test_man_page_renders_without_warnings():
    page = repo_root() / "docs/ficus.1"
    if shutil.which("groff") is None:
        pytest.skip("groff is not installed")
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", str(page)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = subprocess.run(["groff", "-man", "-Tutf8", str(page)], capture_output=True, text=True,
                       timeout=30, env={**os.environ, "LC_ALL": "C.UTF-8"})
    text = re.sub(".\b", "", r.stdout).replace("\u2010", "-")  # overstrike, hyphens
    for section in ("SYNOPSIS", "COMMANDS", "SIGNALS", "FILES", "EXIT STATUS"):
        assert section in text, f"no {section} section"
    for word in ("SIGHUP", "SIGUSR1", "SIGTERM", "ficus check", "ficus run"):
        assert word in text, f"the man page does not mention {word}"


def test_systemd_accepts_the_units(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    # Installed without DESTDIR under a temporary PREFIX, so that ExecStart's
    # binary exists where the unit says.
    prefix = tmp_path / "prefix"
    make("install", f"PREFIX={prefix}")
    units = prefix / "lib/systemd/system"
    (units / "ficus@a.service").symlink_to(units / "ficus@.service")
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(units / "ficus.service"),
                        str(units / "ficus@a.service")],
                       capture_output=True, text=True, timeout=60)
    # verify also reports unrelated units of the host (e.g. in a container);
    # keep what speaks of ours.
    ours = [line for line in (r.stdout + r.stderr).splitlines() if "ficus" in line]
    assert ours == [], "\n".join(ours)
