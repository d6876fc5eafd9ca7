"""What the ``icd`` subcommands share: the model options (``--device``, ``--config``) and the configuration they
build, logging (``-v`` / ``-q``), and the JSON summary printed with ``--json``.

Every subcommand that runs models calls :func:`add_model_arguments` on its parser and :func:`config_from_args` to
build its :class:`~matcher.config.MatcherConfig`. Precedence, lowest first: ``base`` (e.g. the settings an index was
built with), the ``--config`` file, the subcommand's own ``overrides`` (``--top-k``, ...), ``--device``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
import types
import typing
from pathlib import Path
from typing import Any

from matcher.config import MatcherConfig

__all__ = ["DEVICES", "ConfigError", "add_model_arguments", "config_from_args", "configure_logging", "positive_int",
           "print_json", "show_progress"]

DEVICES = ("auto", "cpu", "cuda")
LOGGERS = ("matcher", "detectors")  # the project's loggers; other libraries' loggers are left as they are
_LOG = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A ``--config`` file or ``--device`` that cannot be used; the message names the file and the problem."""


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1 (a clear message for anything else)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--device {auto,cpu,cuda}`` and ``--config JSON`` to ``parser`` (a subcommand that runs models)."""
    parser.add_argument("--device", choices=DEVICES, default=None,
                        help="where the models run: auto (CUDA when available), cpu or cuda (default: the config's, "
                             "auto)")
    parser.add_argument("--config", metavar="JSON", default=None,
                        help="JSON file of MatcherConfig overrides, nested as MatcherConfig.to_dict(), e.g. "
                             "{\"pipeline\": {\"reference_regions\": [\"grid2\"]}, \"local\": {\"ratio\": 0.8}}")


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid onto ``base``, nested dicts merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_JSON_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}


def _type_name(hint: Any) -> str:
    """A config field's type in JSON words ("a number or null", "a list of strings")."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if origin is tuple:
        item = _type_name(typing.get_args(hint)[0]).removeprefix("a ").removeprefix("an ")
        return f"a list of {item}s"
    return _JSON_NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a config field's type (int for float, a list for a tuple)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, (list, tuple)) and all(_fits(v, item) for v in value)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, hint)


def _check(values: dict[str, Any], cls: type, where: str) -> list[str]:
    """Problems of ``values`` as overrides of the dataclass ``cls``: unknown keys, values of the wrong type."""
    hints = typing.get_type_hints(cls)
    problems = []
    for key, value in values.items():
        name = f"{where}{key}"
        if key not in hints:
            known = ", ".join(sorted(hints))
            problems.append(f"unknown key {name!r} (known: {known})")
        elif dataclasses.is_dataclass(hints[key]):
            if isinstance(value, dict):
                problems.extend(_check(value, hints[key], f"{name}."))
            else:
                problems.append(f"{name!r} must be an object of {hints[key].__name__} settings, got {value!r}")
        elif not _fits(value, hints[key]):
            problems.append(f"{name!r} must be {_type_name(hints[key])}, got {json.dumps(value)}")
    return problems


def _read_config_file(path: str) -> dict[str, Any]:
    """The overrides in a ``--config`` file; :class:`ConfigError` naming the file and the problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the config must be a JSON object of MatcherConfig settings, "
                          f"got {type(data).__name__}")
    problems = _check(data, MatcherConfig, "")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return data


def config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None, *,
                     overrides: dict[str, Any] | None = None) -> MatcherConfig:
    """The :class:`MatcherConfig` of a subcommand's arguments (:func:`add_model_arguments`): ``base`` (nested dict
    as :meth:`MatcherConfig.to_dict`, e.g. a stored index's settings), then the ``--config`` file, then
    ``overrides`` (the subcommand's own options, nested likewise), then ``--device`` (which sets ``device`` and
    ``detector.device``). Raises :class:`ConfigError` (a ValueError) naming the file and the problem: missing or
    unreadable, not JSON, not an object, an unknown key, a value of the wrong type; or ``--device cuda`` without
    CUDA."""
    merged = dict(base or {})
    path = getattr(args, "config", None)
    if path:
        merged = _merge(merged, _read_config_file(path))
    if overrides:
        merged = _merge(merged, overrides)
    device = getattr(args, "device", None)
    if device is not None:
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise ConfigError("--device cuda: CUDA is not available here (torch.cuda.is_available() is False); "
                                  "use --device cpu or auto")
        merged = _merge(merged, {"device": device, "detector": {"device": device}})
    try:
        config = MatcherConfig.make(**merged)
    except (TypeError, ValueError) as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}unusable configuration ({exc})") from None
    _LOG.debug("configuration: %s", config.to_json())
    return config


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of the record (test capture, redirections)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _Formatter(logging.Formatter):
    """INFO and DEBUG as the bare message; warnings and errors prefixed with their level."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def configure_logging(verbosity: int = 0) -> None:
    """Send the project's log records to stderr: INFO by default, WARNING when ``verbosity`` < 0 (``-q``), DEBUG
    when > 0 (``-v``). Replaces the handler an earlier call installed (``main`` may run several times)."""
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    for name in LOGGERS:
        logger = logging.getLogger(name)
        for h in [h for h in logger.handlers if isinstance(h, _StderrHandler)]:
            logger.removeHandler(h)
        handler = _StderrHandler()
        handler.setFormatter(_Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(level)  # records still propagate: a host's (or pytest's) root handlers see them too


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars unless ``--no-progress`` or ``-q``."""
    return not getattr(args, "no_progress", False) and getattr(args, "verbosity", 0) >= 0


def print_json(doc: Any) -> None:
    """Print ``doc`` on stdout as one JSON object (non-finite numbers as null)."""
    print(json.dumps(_finite(doc), indent=2, ensure_ascii=False, allow_nan=False))


def _finite(doc: Any) -> Any:
    if isinstance(doc, float):
        return doc if math.isfinite(doc) else None
    if isinstance(doc, dict):
        return {str(k): _finite(v) for k, v in doc.items()}
    if isinstance(doc, (list, tuple)):
        return [_finite(v) for v in doc]
    return doc
