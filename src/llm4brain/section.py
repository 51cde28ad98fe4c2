"""The base of the typed config sections (:mod:`llm4brain.sections`): frozen dataclasses built once from a
validated section, so that a misspelt key is a mypy error where a dict lookup would fail at run time.

Snakemake rules keep their params as plain data (what reruns hash); scripts build the typed section with
``AlignConfig.from_dict(snakemake.params.align)`` and library entry points take it.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from collections.abc import Mapping
from typing import Any, Self


@dataclasses.dataclass(frozen=True, kw_only=True)
class Section:
    """A config section (or a part of one) whose fields are the schema's keys, with the schema's defaults."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str | os.PathLike | None = None) -> Self:
        """The section from its dict: missing keys take the schema's defaults, unknown keys are errors.

        The section remembers which keys it was given, in their order, so that :meth:`to_dict` records what
        the rule passed (the workflow leaves out keys that do not change a model, such as ``train.devices``).

        Args:
            data: the section as the config (or a saved model's config.json) holds it.
            source: the file ``data`` was read from, named in the error (a saved model's config.json).

        Raises:
            ValueError: a key the schema does not have, naming it, the section and ``source``.
        """
        if source is not None:
            try:
                return cls.from_dict(data)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{source}: {err}") from None
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__} is built from a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown key(s) {unknown}")
        section = cls(**{name: _build(hints[name], value) for name, value in data.items()})
        object.__setattr__(section, "_given", tuple(data))
        return section

    def to_dict(self) -> dict[str, Any]:
        """The section as plain data: the keys it was built from, in their order (every key, in the schema's
        order, for a section built directly). This is what config.json files and ``config_hash`` record."""
        names = getattr(self, "_given", None)  # () for a section built from an empty dict: it records nothing
        if names is None:
            names = [f.name for f in dataclasses.fields(self)]
        return {name: _plain(getattr(self, name)) for name in names}

    def replace(self, **changes: Any) -> Self:
        """A copy with ``changes`` (a section is frozen); the copy records every key (:meth:`to_dict`)."""
        return dataclasses.replace(self, **changes)


def _plain(value: Any) -> Any:
    """``value`` with nested sections as dicts, and lists and dicts copied."""
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _build(hint: Any, value: Any) -> Any:
    """``value`` as the field typed ``hint`` holds it: nested sections (alone, optional or in lists) built."""
    if isinstance(hint, type) and issubclass(hint, Section) and isinstance(value, Mapping):
        return hint.from_dict(value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and value is not None:
        for arg in args:
            if isinstance(arg, type) and issubclass(arg, Section) and isinstance(value, Mapping):
                return arg.from_dict(value)
    if origin is list and isinstance(value, list) and args and isinstance(args[0], type):
        if issubclass(args[0], Section):
            return [_build(args[0], item) for item in value]
    return value
