"""YAML → pydantic with errors that name the file, the line, the key and a hint."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tasks.adapters.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _node_at(root: yaml.Node | None, loc: tuple) -> yaml.Node | None:
    """Walk the composed YAML tree along a pydantic error location; the deepest node found.

    For the last element of a mapping the key node is returned, so unknown keys point at
    their own line.
    """
    node = root
    for i, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if str(k.value) == str(part)), None)
            if pair is None:
                return node
            node = pair[0] if i == len(loc) - 1 else pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            return node
    return node


def _is_model(ann: object) -> bool:
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _inner_model(ann: object) -> object:
    """The pydantic model inside Optional[...]/dict[..., M]/list[M], or `ann` itself."""
    return next((a for a in reversed(getattr(ann, "__args__", ()) or ()) if _is_model(a)), ann)


def _hint(model_cls: type[BaseModel], loc: tuple, err_type: str) -> str:
    """For an unknown key: list the keys allowed where it stands."""
    if err_type != "extra_forbidden":
        return ""
    ann: object = model_cls
    for part in loc[:-1]:
        if _is_model(ann):
            field = ann.model_fields.get(str(part))  # type: ignore[union-attr]
            if field is None:
                return ""
            ann = field.annotation
            origin = getattr(ann, "__origin__", None)
            if origin not in (dict, list):
                ann = _inner_model(ann)
        else:  # a dict key or list index: step into the container's value type
            ann = _inner_model(ann)
    if _is_model(ann):
        return f" (allowed keys: {', '.join(ann.model_fields)})"  # type: ignore[union-attr]
    return ""


def _line_col(mark: Any) -> tuple[int, int]:
    return mark.line + 1, mark.column + 1


def yaml_syntax_error(source: str, exc: yaml.YAMLError, text: str = "") -> ConfigError:
    """One line: `source:line:column: not valid YAML: <PyYAML's problem>` (1-based, as editors
    count), with what PyYAML was parsing and where that started, when it says."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        where = ":{}:{}".format(*_line_col(mark))
    elif isinstance(getattr(exc, "position", None), int) and text:  # ReaderError: a bad character
        pos = exc.position
        line, column = text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
        where = f":{line}:{column}"
    else:
        where = ""
    problem = getattr(exc, "problem", None) or str(exc)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and _line_col(context_mark) != _line_col(mark):
        context += " started at line {}, column {}".format(*_line_col(context_mark))
    message = problem + (f" ({context})" if context else "")
    return ConfigError(f"{source}{where}: not valid YAML: {' '.join(message.split())}")


def safe_load(text: str, source: str) -> Any:
    """yaml.safe_load, with a syntax error as a one-line ConfigError (see yaml_syntax_error)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise yaml_syntax_error(source, exc, text) from None


def parse_yaml_model(text: str, model_cls: type[M], source: str, with_lines: bool = True) -> M:
    """Validate YAML text into `model_cls`; raise ConfigError naming source(:line) and the key.

    `with_lines=False` when the text is not the file the user wrote (recipes after `--set`), where a
    line number would point at the wrong place.
    """
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise yaml_syntax_error(source, exc, text) from None
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            node = _node_at(root, loc)
            line = f":{node.start_mark.line + 1}" if node is not None and with_lines else ""
            key = ".".join(str(p) for p in loc) or "<root>"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"{source}{line}: {key}: {msg}{_hint(model_cls, loc, err['type'])}")
        raise ConfigError("; ".join(lines)) from None


def load_yaml_model(path: str | Path, model_cls: type[M]) -> M:
    """Read a YAML file and validate it (see parse_yaml_model)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    return parse_yaml_model(text, model_cls, str(path))


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply `--set a.b.c=value` overrides to nested data (values parsed as YAML scalars).

    A numeric path part indexes a list (`sources.0.path=...`); other parts create mappings.
    """
    out = copy.deepcopy(data)
    for item in overrides:
        path, sep, raw = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        node: Any = out
        parts = path.split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i]) or '<root>'} is a list "
                                      f"of {len(node)}; {part!r} is not an index in it")
                key: Any = int(part)
            else:
                key = part
                if not last and not isinstance(node.get(key), dict | list):
                    node[key] = {}
            if last:
                node[key] = yaml.safe_load(raw)
            else:
                node = node[key]
    return out


def load_recipe(path: str | Path, model_cls: type[M], overrides: list[str] = ()) -> M:
    """Load a recipe YAML, apply `--set` overrides, validate (errors name file and key)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    if not overrides:
        return parse_yaml_model(text, model_cls, str(path))
    data = apply_overrides(safe_load(text, str(path)) or {}, list(overrides))
    return parse_yaml_model(yaml.safe_dump(data, sort_keys=False), model_cls, f"{path} (with --set)",
                            with_lines=False)
