"""Hatchling build hook: the wheel carries the shipped data folders as package data.

The folders stay where they are in the repository (``models/``, ``experiments/protocols/``,
``calibration/``: one copy in git); the wheel maps them to ``nksim/_data/<name>`` as listed in
``[tool.hatch.build.targets.wheel.hooks.custom] data`` in pyproject.toml, where
``nksim.resources.data_path`` finds them. Only regular wheels get them: an editable install
reads the repository folders (a plain ``force-include`` table would also copy them into
site-packages for editable installs, where nothing reads them).
"""
from __future__ import annotations

from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class PackageDataHook(BuildHookInterface):
    """Maps the repository's data folders into regular (``standard``) wheels as ``nksim/_data/<name>``."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Add the configured ``data`` folders to ``force_include`` for standard wheels (not editable ones)."""
        if version == "standard":
            build_data["force_include"].update(self.config["data"])
