"""The package reads top-down: no module imports a higher layer or, through any chain, itself;
the inference commands share one declaration of their common options; the CLI's training
options are the config dataclasses' own defaults."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import click
import pytest
import typer

from tests.clirun import ROOT

# Lower layers first; a module may import its own layer and those below it.
LAYERS = {"core": 0, "io": 1, "models": 2, "data": 3, "generative": 3, "inference": 4,
          "train": 5, "devicebench": 5, "export": 5, "cli": 6}
PACKAGE = ROOT / "cvtool"


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every cvtool module -> the cvtool modules it imports, at the top or inside functions."""
    modules = {_module(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.update(f"{node.module}.{alias.name}" for alias in node.names)
                found.add(node.module)
            elif isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
        graph[name] = {target for target in found if target in modules and target != name}
    return graph


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None  # cvtool itself: the facade


def test_every_package_is_in_a_layer() -> None:
    packages = {path.name for path in PACKAGE.iterdir()
                if path.is_dir() and (path / "__init__.py").exists()}
    assert packages == set(LAYERS)
    flat = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert flat == ["__init__.py", "__main__.py"]


def test_no_module_imports_a_higher_layer() -> None:
    upward = [f"{module} -> {target}" for module, targets in _imports().items()
              for target in targets
              if None not in (_layer(module), _layer(target)) and _layer(target) > _layer(module)]
    assert upward == []


def test_no_import_cycles() -> None:
    graph = _imports()
    graph = {module: {t for t in targets if t != "cvtool"} for module, targets in graph.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                cycles.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_training_does_not_import_inference_tasks() -> None:
    leaks = [f"{module} -> {target}" for module, targets in _imports().items()
             if module.startswith("cvtool.train.") for target in targets
             if target.startswith("cvtool.inference")]
    assert leaks == []


def test_only_the_ray_engine_imports_ray() -> None:
    """Ray's API moves between releases: one module holds every use of it."""
    importers = sorted(_module(path) for path in PACKAGE.rglob("*.py")
                       if any(isinstance(node, (ast.Import, ast.ImportFrom)) and
                              any(name == "ray" or name.startswith("ray.") for name in
                                  ([a.name for a in node.names] if isinstance(node, ast.Import)
                                   else [node.module or ""]))
                              for node in ast.walk(ast.parse(path.read_text()))))
    assert importers == ["cvtool.inference.ray_engine"]


def _command(*names: str) -> click.Command:
    command = typer.main.get_command(__import__("cvtool.cli.app", fromlist=["app"]).app)
    for name in names:
        command = command.commands[name]
    return command


@pytest.mark.parametrize("name", ["classify", "detect", "segment-instance", "segment-semantic"])
def test_inference_commands_share_one_declaration(name: str) -> None:
    from cvtool.cli.options import INFERENCE_OPTIONS, InferenceOptions
    from cvtool.core.options import ClassifyOptions, DetectOptions, SegmentOptions

    params = {param.name: param for param in _command(name).params}
    assert set(INFERENCE_OPTIONS) <= set(params)
    defaults = {field.name: field.default for field in dataclasses.fields(InferenceOptions)}
    task_type = {"classify": ClassifyOptions, "segment-semantic": SegmentOptions}.get(
        name, DetectOptions)
    defaults["batch_size"] = task_type().batch_size if task_type is not DetectOptions else 4
    for option, default in defaults.items():
        assert params[option].default == default, option
    assert "-o" in params["output"].opts and "-b" in params["batch_size"].opts


@pytest.mark.parametrize("task", ["classify", "detect", "segment-instance", "segment-semantic",
                                  "generate"])
def test_train_options_default_as_their_configs(task: str) -> None:
    from cvtool.train import config as configs
    from cvtool.train.api import TRAINERS

    config_type = getattr(configs, TRAINERS[task][0])
    fields = {field.name: field for field in dataclasses.fields(config_type)}
    params = {param.name: param for param in _command("train", task).params}
    checked = 0
    for name, param in params.items():
        if name not in fields or name in ("data", "epochs", "task"):
            continue  # --data has no default; --epochs' default is the config's (see below)
        field = fields[name]
        default = field.default if field.default is not dataclasses.MISSING else None
        shown = param.default
        if name == "decoder_channels" and shown is not None:
            shown = [int(part) for part in shown.split(",")]
        assert shown == default, f"train {task} --{name}: {shown!r} vs {default!r}"
        checked += 1
    assert checked >= 10
    assert params["epochs"].default is None  # the config's own default applies


def test_every_module_imports() -> None:
    """A name moved between modules fails here, not in the one command that reaches it."""
    import importlib

    for module in sorted(_imports()):
        if not module.endswith("__main__"):
            importlib.import_module(module)
