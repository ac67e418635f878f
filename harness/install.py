"""Where the harness finds its configs, in a source checkout and in an installed wheel alike.

conf/ is the top-level folder users edit. A wheel carries a copy of it as package data under `harness/conf/`
(pyproject.toml maps it there); a source checkout or an editable install has no such copy and reads conf/ beside the
package. Hydra gets the absolute path, so neither the working directory nor how the entry point was started
(`harness-train`, `python -m harness.train`) changes which configs are used.
"""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The config directory: the wheel's packaged copy, else the checkout's conf/."""
    packaged = _PACKAGE / "conf"
    if (packaged / "config.yaml").is_file():
        return packaged
    return _PACKAGE.parent / "conf"


CONF_DIR = str(conf_dir())
