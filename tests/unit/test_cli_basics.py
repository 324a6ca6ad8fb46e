"""The `orderguard` command's own options."""

from __future__ import annotations

from importlib.metadata import version

from click.testing import CliRunner

from dataflows.cli import main


def test_version_is_the_installed_package_version():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0, r.output
    assert r.output == f"orderguard {version('orderguard')}\n"
