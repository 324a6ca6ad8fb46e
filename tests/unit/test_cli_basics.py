"""The `orderguard` command's own options."""

from __future__ import annotations

from importlib.metadata import version

from click.testing import CliRunner

from dataflows.cli import main


def test_version_is_the_installed_package_version():
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0, r.output
    assert r.output == f"orderguard {version('orderguard')}\n"


def test_ctrl_c_while_run_is_starting_is_a_stop_not_an_abort(monkeypatch):
    """The demo's Ctrl-C can reach `orderguard run` while it is still starting (its config
    read, its topics set up), before the run's own SIGINT handling: click then said
    "Aborted!" and exited 1, and the demo reported the pipeline as failed (CI, stop 23)."""

    def interrupted(_path):
        raise KeyboardInterrupt

    monkeypatch.setattr("dataflows.cli._settings", interrupted)
    r = CliRunner().invoke(main, ["run"])
    assert r.exit_code == 130, r.output
    assert "Aborted" not in r.output and r.output.startswith("stopped")
