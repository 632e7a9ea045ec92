"""Print the requirements of dcgan-serving's extras, one a line, read from pyproject.toml.

    python3 docker/requirements.py pyproject.toml serve-cpu            # base deps + the extra
    python3 docker/requirements.py pyproject.toml serve 'onnxruntime-gpu[cuda,cudnn]'

Arguments after the file are extras, or (when they hold a character an extra name cannot)
extra requirement lines passed through. The images install the dependencies from this list in
a layer of their own, before the sources are copied, so editing code does not reinstall GBs of
wheels; scripts/docker-wheelhouse.sh downloads from the same list. Standard library only: it
runs on the bare base image, before any venv exists.
"""

from __future__ import annotations

import re
import sys
import tomllib

EXTRA_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1], "rb") as file:
        project = tomllib.load(file)["project"]
    extras = project.get("optional-dependencies", {})
    lines = list(project.get("dependencies", []))
    for arg in argv[2:]:
        if EXTRA_NAME.match(arg):
            if arg not in extras:
                known = ", ".join(extras)
                print(f"error: no extra {arg!r} in {argv[1]} (has: {known})", file=sys.stderr)
                return 2
            lines.extend(extras[arg])
        else:
            lines.append(arg)
    seen: set[str] = set()
    for line in lines:
        if line not in seen:
            seen.add(line)
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
