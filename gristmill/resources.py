"""Where the data folders are: inside the installed package, or at the top of the checkout.

`runtimes/` and `sandbox/` stay at the top of the repository, where the project's shape
puts them; a built wheel carries copies of them as package data under `gristmill/_data/`
(put there by `setup.py`'s build step), so an installed server finds them with
`importlib.resources` wherever it is installed. The conformance cases, product data read
by `gristmill conformance`, are the package's own data (`gristmill/conformance/suite/`).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["CONFORMANCE_DIR", "PROFILES_DIR", "RUNTIMES_DIR", "data_dir"]

# The checkout's folder for each packaged folder's name (what setup.py copies from).
CHECKOUT_PATHS = {
    "runtimes": "runtimes",
    "sandbox": "sandbox",
}


def data_dir(name: str) -> Path:
    """The folder `name` (a key of CHECKOUT_PATHS): the packaged copy, else the checkout's."""
    packaged = files("gristmill").joinpath("_data", name)
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[1] / CHECKOUT_PATHS[name]


RUNTIMES_DIR = data_dir("runtimes")
PROFILES_DIR = data_dir("sandbox") / "profiles"
CONFORMANCE_DIR = Path(str(files("gristmill").joinpath("conformance", "suite")))
