#!/usr/bin/env python3
"""Print the Python requirements of shopgate's container images, one per line.

They are setup.cfg's `install_requires` (the one list of dependencies) minus what no container
needs: charts are drawn on the host by `shopgate demo`, never inside an image. Used by the
Dockerfile (pip install in the image) and by base-image.sh (the offline wheelhouse), so both
read the same list. Standard library only: it runs in a bare base image.
"""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

#: Distributions only the host-side tools use.
HOST_ONLY = {"matplotlib"}


def image_requirements(setup_cfg: Path) -> list[str]:
    parser = configparser.ConfigParser()
    if not parser.read(setup_cfg):
        raise SystemExit(f"image-requirements: cannot read {setup_cfg}")
    lines = parser.get("options", "install_requires", fallback="").splitlines()
    requirements = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    return [req for req in requirements if re.split(r"[\s<>=!~;\[]", req, maxsplit=1)[0].lower() not in HOST_ONLY]


if __name__ == "__main__":
    default = Path(__file__).resolve().parent.parent / "setup.cfg"
    print("\n".join(image_requirements(Path(sys.argv[1]) if len(sys.argv) > 1 else default)))
