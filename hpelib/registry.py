"""Named plug-in parts (backbones, pose heads, SSL tasks, data sets) and the one unknown-key check.

A :class:`Registry` maps a name to the constructor of one kind of part. The
builder of that kind (``build_backbone``, ``build_pose_head``, ``build_task``,
``build_dataset``) supplies some arguments itself (the registry's
``supplied`` names, e.g. ``feat_dim``); every other keyword parameter of a
constructor is an *option* that a configuration may set. Options are read
from the constructor's signature, so no option list is kept by hand:

>>> HEADS = Registry("pose head", supplied=("feat_dim",))
>>> @HEADS.register("linear")
... class LinearHead:
...     def __init__(self, feat_dim, scale=1.0): ...
>>> HEADS.options("linear")
['scale']
>>> HEADS.build("linear", 8, scal=2.0)
Traceback (most recent call last):
ValueError: pose head 'linear': unknown option(s) ['scal']; valid options: ['scale']

A constructor may also be registered by reference, ``"package.module:attr"``,
so that a module with heavy imports is only loaded when its part is used.

:func:`check_keys` is the shared "unknown key" check of the configuration
readers (model and training configs, study files, part options).
"""
from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Union

__all__ = ["Registry", "check_keys", "signature_options"]

Constructor = Union[Callable, str]


def check_keys(mapping, valid: Iterable[str], where: str, error: type[Exception] = ValueError, *,
               noun: str = "key") -> None:
    """Raise ``error`` unless ``mapping`` is a mapping whose keys are all in ``valid``.

    The message starts with ``where`` (what is being read, e.g. a file and a
    section) and lists the unknown keys and the valid ones, both sorted:
    ``"<where>: unknown key(s) ['epoch']; valid keys: ['batch_size', 'epochs', ...]"``.
    ``noun`` replaces "key" in it (``"option"`` for the options of a part).
    """
    if not isinstance(mapping, Mapping):
        raise error(f"{where}: expected a mapping, got {type(mapping).__name__}")
    valid = sorted(set(valid))
    unknown = sorted(set(mapping) - set(valid), key=str)
    if unknown:
        raise error(f"{where}: unknown {noun}(s) {unknown}; valid {noun}s: {valid}")


def signature_options(constructor: Callable, supplied: Iterable[str] = ()) -> list[str]:
    """The names ``constructor`` accepts as keywords, in signature order, less those in ``supplied``.

    ``*args``, ``**kwargs`` and positional-only parameters are not options
    (nothing can be checked against ``**kwargs``; spell the options out).
    """
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    skip = set(supplied)
    return [p.name for p in inspect.signature(constructor).parameters.values()
            if p.kind in kinds and p.name not in skip]


class Registry:
    """The constructors of one kind of part, by name, in registration order.

    ``kind`` names the part in error messages (``"backbone"``, ``"SSL task"``).
    ``supplied`` are the parameters the builder passes to every constructor
    (by position or keyword); each constructor must accept them, and they
    are not options.

    The registry behaves as a read-only collection of names: ``name in reg``,
    ``list(reg)``, ``sorted(reg)``, ``len(reg)``; ``reg[name]`` is ``reg.get(name)``.
    """

    def __init__(self, kind: str, supplied: Iterable[str] = ()):
        self.kind = kind
        self.supplied = tuple(supplied)
        self._entries: dict[str, Constructor] = {}

    # -- registration ------------------------------------------------------
    def add(self, name: str, constructor: Constructor) -> Constructor:
        """Register ``constructor`` (a callable, or ``"module:attr"`` imported on first use) as ``name``.

        Raises ``ValueError`` when ``name`` is taken or empty, or when the
        constructor does not accept the supplied parameters.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} name must be a non-empty string, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        if not isinstance(constructor, str):
            self._check_supplied(name, constructor)
        self._entries[name] = constructor
        return constructor

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator form of :meth:`add`: ``@REG.register("name")`` above a class or function."""
        return lambda constructor: self.add(name, constructor)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (``ValueError`` naming the valid names when it is not registered)."""
        self._require(name)
        del self._entries[name]

    @contextmanager
    def registered(self, name: str, constructor: Constructor) -> Iterator[Constructor]:
        """Register ``constructor`` as ``name`` for the duration of a ``with`` block (tests, experiments)."""
        self.add(name, constructor)
        try:
            yield constructor
        finally:
            self.unregister(name)

    # -- lookup ------------------------------------------------------------
    def get(self, name: str) -> Callable:
        """The constructor of ``name``; ``ValueError`` naming the kind, ``name`` and the valid names."""
        self._require(name)
        constructor = self._entries[name]
        if isinstance(constructor, str):  # a lazy "module:attr" reference: import it now, once
            module, _, attr = constructor.partition(":")
            constructor = getattr(importlib.import_module(module), attr)
            self._check_supplied(name, constructor)
            self._entries[name] = constructor
        return constructor

    def _require(self, name) -> None:
        if not isinstance(name, str) or name not in self._entries:
            raise ValueError(f"unknown {self.kind} {name!r}; valid names: {self.names()}")

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        return list(self._entries)

    def __getitem__(self, name: str) -> Callable:
        return self.get(name)

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"

    # -- options and building ---------------------------------------------
    def options(self, name: str) -> list[str]:
        """The option names of ``name``: its constructor's keyword parameters less the supplied ones."""
        return signature_options(self.get(name), self.supplied)

    def check_options(self, name: str, options, where: str | None = None, extra: Iterable[str] = ()) -> None:
        """``ValueError`` unless every key of ``options`` is an option of ``name`` or in ``extra``.

        ``extra`` are keys the caller handles itself (e.g. an SSL task's
        ``weight``); ``where`` prefixes the message with a location.
        """
        what = f"{self.kind} {name!r}"
        check_keys(options, [*self.options(name), *extra], f"{where}: {what}" if where else what, noun="option")

    def coerce_options(self, name: str, options: dict) -> tuple[dict, list[str]]:
        """``options`` of ``name`` coerced to the types its constructor declares: ``(options, problems)``.

        See :func:`hpelib.validation.coerce`; options without an annotation are passed through.
        """
        from .validation import check_fields, option_types

        return check_fields(option_types(self.get(name)), options)

    def build(self, name: str, *args, **kwargs):
        """``constructor(*args, **kwargs)`` after checking the keywords that are not supplied ones."""
        self.check_options(name, {k: v for k, v in kwargs.items() if k not in self.supplied})
        return self.get(name)(*args, **kwargs)

    def _check_supplied(self, name: str, constructor: Callable) -> None:
        params = inspect.signature(constructor).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        missing = [s for s in self.supplied if s not in params and not takes_any]
        if missing:
            raise ValueError(f"{self.kind} {name!r}: its constructor must accept {list(self.supplied)} "
                             f"(supplied by the builder); {missing} missing")
