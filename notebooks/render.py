"""Execute every notebook top to bottom and store it with its outputs (figures included), so
readers see the results without running them:

    python notebooks/render.py            # all notebooks
    python notebooks/render.py 15_cnn_vs_mlp.ipynb

The test suite runs the notebooks again (tests/test_notebooks.py) and checks that the stored ones
were executed in order without errors.
"""

from __future__ import annotations

import os
import pathlib
import sys

import nbclient
import nbformat

HERE = pathlib.Path(__file__).resolve().parent


def render(path: pathlib.Path) -> None:
    nb = nbformat.read(path, as_version=4)
    env_path = os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))
    os.environ["PYTHONPATH"] = env_path  # the kernel imports this checkout of fastnn
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend stores the figures
    nbclient.NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    nbformat.write(nb, path)


def main(names: list[str]) -> None:
    paths = [HERE / name for name in names] if names else sorted(HERE.glob("*.ipynb"))
    for path in paths:
        print(f"rendering {path.name}", flush=True)
        render(path)


if __name__ == "__main__":
    main(sys.argv[1:])
