"""The package's floors: every import, read from the source (lazy ones inside functions too), flows down.

``nn/`` (parts) < ``modalities/`` < ``models/`` < ``data/`` < ``training/`` (the loop) < ``experiments/``
(studies) < ``cli.py``; ``tasks.py``, ``metrics.py``, ``config.py`` and the small utilities sit beside
the floors for all of them, and ``heterogeneity/`` (the maths) and ``bench/`` (speed) stand on
``training/``."""

import ast
from pathlib import Path

import highmodal

PACKAGE = Path(highmodal.__file__).parent
UPPER = {"data", "training", "experiments", "bench", "heterogeneity", "cli"}
FORBIDDEN = {
    "nn": UPPER | {"modalities", "models", "tasks", "metrics", "config"},
    "modalities": UPPER | {"models"},
    "models": UPPER,
    "data": UPPER - {"data"} | {"models"},
    "training": {"experiments", "bench", "heterogeneity", "cli"},
    "heterogeneity": {"experiments", "bench", "cli"},
    "bench": {"experiments", "cli"},
    "experiments": {"cli"},
}


def imported(path: Path) -> list[tuple[int, str]]:
    """``(line, first part under highmodal)`` of every import of the package in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{a.name}" for a in node.names] if node.module == "highmodal" else [node.module]
        else:
            continue
        out += [(node.lineno, n.split(".")[1]) for n in names if n.startswith("highmodal.")]
    return out


def violations(package: Path) -> list[str]:
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        floor = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for line, target in imported(path):
            if (target == "cli" and rel.name != "__main__.py") or target in FORBIDDEN.get(floor, ()):
                found.append(f"{rel}:{line} imports highmodal.{target}")
    return found


def test_imports_flow_down():
    assert violations(PACKAGE) == []


def test_an_upward_import_is_caught(tmp_path):
    for rel, text in {"models/m.py": "def f():\n    from highmodal.training.trainer import Trainer\n",
                      "nn/n.py": "from highmodal import tasks\n", "data/d.py": "import highmodal.cli\n",
                      "models/ok.py": "from highmodal.nn.attention import Attention\n"}.items():
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_text(text)
    assert violations(tmp_path) == ["data/d.py:1 imports highmodal.cli", "models/m.py:2 imports highmodal.training",
                                    "nn/n.py:1 imports highmodal.tasks"]
