"""Where the shipped data lives: parameter sets, protocols, calibration data and results.

The files have one home in the repository (``models/``, ``experiments/protocols/``,
``calibration/``). A wheel carries them as package data under ``nksim/_data/`` (the
``force-include`` table in ``pyproject.toml``); a source checkout or an editable install has no
``nksim/_data/`` and reads the repository folders. :func:`data_path` hides the difference::

    data_path("models") / "default.toml"
    data_path("calibration") / "data" / "ahmadvand2023_outcomes.csv"
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

#: Data folder name -> its folder in the repository (relative to the repository root). The wheel
#: holds each at ``nksim/_data/<name>`` (keep in step with pyproject.toml's force-include table).
DATA_FOLDERS: dict[str, str] = {
    "models": "models",
    "protocols": "experiments/protocols",
    "calibration": "calibration",
}


def data_path(name: str) -> Path:
    """Folder of the shipped data ``name`` (a key of :data:`DATA_FOLDERS`).

    The installed package data when present, otherwise the folder in the source tree.
    """
    if name not in DATA_FOLDERS:
        raise KeyError(f"unknown data folder {name!r}; known: {sorted(DATA_FOLDERS)}")
    packaged = resources.files(__package__).joinpath("_data", name)
    if packaged.is_dir():
        if not isinstance(packaged, Path):  # e.g. imported from a zip file
            raise RuntimeError(f"nksim's data folder {name!r} is not on the file system ({packaged}); "
                               "install nksim from a wheel or a source checkout")
        return packaged
    return Path(__file__).resolve().parents[1] / DATA_FOLDERS[name]
