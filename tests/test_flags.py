"""Flags (``bool`` parameters) of the public API: a string such as ``'no'`` is refused, not read as True."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import gearsx as gx
from gearsx._utils import check_flag, checks_flags
from gearsx._utils._validation import _flag_kind

_MODULES = ("pp", "tl", "pl", "metrics", "datasets", "model", "geometry")


def _public_callables():
    """Every public function of the API modules, and every public method (with ``__init__``) of their classes."""
    for mod_name in _MODULES:
        mod = getattr(gx, mod_name)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isclass(obj):
                for attr, member in inspect.getmembers(obj, callable):
                    if attr == "__init__" or not attr.startswith("_"):
                        yield f"{mod_name}.{name}.{attr}", member
            elif callable(obj):
                yield f"{mod_name}.{name}", obj


def _flags(func) -> list[str]:
    try:
        params = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return []
    return [p.name for p in params if _flag_kind(p.annotation) is not None]


def test_every_public_flag_is_checked():
    flagged = {name: (func, _flags(func)) for name, func in _public_callables()}
    flagged = {name: v for name, v in flagged.items() if v[1]}
    assert len(flagged) >= 30  # the walk reaches the API (35 callables had flags when this test was written)
    unchecked = {
        name: flags for name, (func, flags) in flagged.items() if set(flags) - set(getattr(func, "checked_flags", ()))
    }
    assert not unchecked, f"decorate with gearsx._utils.checks_flags: {unchecked}"


@pytest.mark.parametrize("value", [True, False, np.True_, np.False_])
def test_check_flag_accepts_bools(value):
    out = check_flag(value, name="copy")
    assert type(out) is bool
    assert out == bool(value)


@pytest.mark.parametrize("value", ["no", "False", 0, 1, 1.0, None, [False]])
def test_check_flag_refuses_other_values(value):
    with pytest.raises(TypeError, match=r"`copy` must be True or False; got"):
        check_flag(value, name="copy")


def test_check_flag_optional_keeps_none():
    assert check_flag(None, name="show", optional=True) is None
    with pytest.raises(TypeError, match="`show` must be True, False or None; got 'no'"):
        check_flag("no", name="show", optional=True)


def _toy(x: int, *, flag: bool = False, maybe: bool | None = None) -> tuple:
    return x, flag, maybe


def test_checks_flags_checks_converts_and_passes_other_arguments():
    toy = checks_flags(_toy)
    assert toy.checked_flags == ("flag", "maybe")
    assert inspect.signature(toy) == inspect.signature(_toy)
    out = toy(3, flag=np.True_, maybe=np.False_)
    assert out == (3, True, False)
    assert type(out[1]) is bool
    assert type(out[2]) is bool
    assert toy(4) == (4, False, None)
    with pytest.raises(TypeError, match="`flag` must be True or False; got 'no'"):
        toy(1, flag="no")
    with pytest.raises(TypeError, match="`maybe` must be True, False or None; got 0"):
        toy(1, maybe=0)
    with pytest.raises(TypeError, match="unexpected keyword argument 'flg'"):  # Python's own error, untouched
        toy(1, flg=True)


def test_checks_flags_on_a_method_and_with_real_annotations():
    class Toy:
        @checks_flags
        def run(self, *, flag: bool = True):
            return flag

    assert Toy().run(flag=np.False_) is False
    with pytest.raises(TypeError, match="`flag` must be True or False"):
        Toy().run(flag="yes")

    def unannotated_future(flag: bool = True):  # this module's annotations are strings; an object one too
        return flag

    unannotated_future.__annotations__["flag"] = bool
    assert checks_flags(unannotated_future)(np.True_) is True


def test_checks_flags_refuses_a_function_without_flags():
    with pytest.raises(TypeError, match="has no parameter annotated `bool`"):
        checks_flags(lambda x: x)


def test_settings_progress_bar_uses_the_same_check():
    before = gx.settings.progress_bar
    try:
        gx.settings.progress_bar = np.False_
        assert gx.settings.progress_bar is False
        with pytest.raises(TypeError, match="`progress_bar` must be True or False; got 'no'"):
            gx.settings.progress_bar = "no"
    finally:
        gx.settings.progress_bar = before
