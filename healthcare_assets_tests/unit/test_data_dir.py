"""Where the data directory and the repository's files are, whatever the current folder."""

from __future__ import annotations

from healthcare_assets.plumbing import settings
from healthcare_assets.plumbing.settings import PipelineSettings
from healthcare_assets_tests.fixtures.environment import REPO


def test_the_checkout_is_found_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HEALTHCARE_DATA_DIR", raising=False)
    assert settings.checkout() == REPO
    assert settings.environment().data_dir_and_origin() == (REPO / ".data", "this checkout")
    assert PipelineSettings().default_source() == str(REPO / "data" / "healthcare_dataset.csv")
    assert PipelineSettings(import_dir=str(tmp_path)).import_roots() == [REPO / "data", tmp_path]


def test_the_variable_wins_and_a_relative_one_is_from_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", "mine")
    assert settings.environment().data_dir_and_origin() == (tmp_path / "mine", "HEALTHCARE_DATA_DIR")
    monkeypatch.setenv("HEALTHCARE_DATA_DIR", "")  # set but empty: as if unset, never the current folder
    assert settings.data_dir() == REPO / ".data"


def test_an_installed_package_uses_the_per_user_folder(tmp_path, monkeypatch):
    """Without a checkout (an installed wheel): XDG_DATA_HOME, else ~/.local/share; repo files from
    the current folder (an image's WORKDIR)."""
    monkeypatch.setattr(settings, "checkout", lambda: None)
    monkeypatch.delenv("HEALTHCARE_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert settings.environment().data_dir_and_origin() == (tmp_path / "xdg" / "healthcare-assets", "per-user")
    monkeypatch.setenv("XDG_DATA_HOME", "relative")  # the specification says to ignore it
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert settings.data_dir() == tmp_path / "home" / ".local" / "share" / "healthcare-assets"
    assert PipelineSettings().default_source() == str(tmp_path / "data" / "healthcare_dataset.csv")
