"""Packaging basics: `make install` with PREFIX and DESTDIR puts the binary,
the man page, the docs with the example configuration and the systemd units
in place, with their paths filled in; `make uninstall` takes them away."""

import os
import shutil
import subprocess

import pytest

from harness import repo_root, scaled


def make(*args):
    # A fresh make: not the MODE or jobs of a `make test` that runs this file.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    return subprocess.run(["make", "--no-print-directory", *args], cwd=repo_root(), env=env,
                          capture_output=True, text=True, timeout=scaled(300))


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    dest = tmp_path_factory.mktemp("destdir")
    r = make("install", f"DESTDIR={dest}", "PREFIX=/usr")
    assert r.returncode == 0, r.stdout + r.stderr
    return dest


def test_files_are_installed(installed):
    for rel in ("usr/bin/ficus", "usr/share/man/man1/ficus.1",
                "usr/share/doc/ficus/LICENSE", "usr/share/doc/ficus/CHANGELOG.md",
                "usr/share/doc/ficus/configuration.md",
                "usr/share/doc/ficus/examples/gateway.yaml",
                "usr/lib/systemd/system/ficus.service", "usr/lib/systemd/system/ficus@.service"):
        assert (installed / rel).is_file(), rel
    r = subprocess.run([str(installed / "usr/bin/ficus"), "version"], capture_output=True,
                       text=True, timeout=scaled(10))
    assert r.returncode == 0 and r.stdout.startswith("ficus "), r


def test_units_and_man_page_have_their_paths(installed):
    unit = (installed / "usr/lib/systemd/system/ficus.service").read_text()
    assert "ExecStart=/usr/bin/ficus run -c /etc/ficus/ficus.yaml" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "@" not in unit.replace("ficus@.service", "")
    tpl = (installed / "usr/lib/systemd/system/ficus@.service").read_text()
    assert "RuntimeDirectoryPreserve=yes" in tpl and "@BINDIR@" not in tpl
    man = (installed / "usr/share/man/man1/ficus.1").read_text()
    assert "@VERSION@" not in man and "@DOCDIR@" not in man and "SIGHUP" in man


def test_man_page_renders_without_warnings(installed):
    if not shutil.which("groff"):
        pytest.skip("groff is not installed")
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z",
                        str(installed / "usr/share/man/man1/ficus.1")],
                       capture_output=True, text=True, timeout=scaled(30))
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_uninstall(tmp_path):
    r = make("install", f"DESTDIR={tmp_path}", "PREFIX=/opt/ficus")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "opt/ficus/bin/ficus").is_file()
    unit = (tmp_path / "opt/ficus/lib/systemd/system/ficus.service").read_text()
    assert "/opt/ficus/etc/ficus/ficus.yaml" in unit
    r = make("uninstall", f"DESTDIR={tmp_path}", "PREFIX=/opt/ficus")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "opt/ficus/bin/ficus").exists()
    assert not (tmp_path / "opt/ficus/share/doc/ficus").exists()
