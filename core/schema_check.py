"""JSON Schema validation of Orchestra's own schemas, fast on long lists and wide mappings.

Why not plain ``jsonschema``: it resolves a ``$ref`` and builds a validator per item, about 30 µs each,
so 300,000 `choices` took 15 s on their own. Here the schema's ``$ref``s to ``$defs`` are inlined once,
and the ``items``, ``properties`` and ``additionalProperties`` keywords first try a plain type or enum
test on each value; only a value that fails it goes through jsonschema, so every error is jsonschema's
own, with the same path, validator and message as before.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from functools import lru_cache
from typing import Any

Fast = Callable[[Any], bool]
_TYPES: dict[str, Fast] = {
    "string": lambda v: type(v) is str,
    "boolean": lambda v: type(v) is bool,
    "number": lambda v: type(v) is int or type(v) is float,
    "integer": lambda v: type(v) is int,
    "null": lambda v: v is None,
    "object": lambda v: False, "array": lambda v: False,  # never decided here
}
_IGNORED = {"description", "title", "default", "examples"}


def inline_refs(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with every ``{"$ref": "#/$defs/NAME"}`` (nothing beside it) replaced by the definition."""
    defs = schema.get("$defs", {})

    def walk(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/") and set(node) - _IGNORED == {"$ref"}:
                name = ref[len("#/$defs/"):]
                if name in defs and name not in seen:  # a recursive definition keeps its $ref
                    return walk(defs[name], seen | {name})
            return {k: (v if k == "$defs" else walk(v, seen)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, seen) for v in node]
        return node

    result: dict[str, Any] = walk(schema, frozenset())
    return result


_NUMBER = (int, float)
_KNOWN = {"type", "enum", "minimum", "maximum", "minLength", "minItems", "items", "properties",
          "additionalProperties", "required", "pattern"}


def _fast_test(subschema: Any) -> Fast | None:
    """A test that, when it passes, proves ``subschema`` accepts the value; None when there is none.

    Only the keywords of _KNOWN are understood; a test may fail on a valid value (jsonschema then
    decides), never pass an invalid one."""
    if not isinstance(subschema, dict) or set(subschema) - _IGNORED - _KNOWN:
        return None
    checks: list[Fast] = []
    if "type" in subschema:
        names = subschema["type"]
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, list) or not all(n in _TYPES for n in names):
            return None
        if "object" in names or "array" in names:
            if len(names) != 1:
                return None
            checks.append((lambda v: type(v) is dict) if names == ["object"] else (lambda v: type(v) is list))
        else:
            tests = [_TYPES[n] for n in names]
            checks.append(lambda v: any(t(v) for t in tests))
    if "enum" in subschema:
        if not isinstance(subschema["enum"], list):
            return None
        allowed = {(type(e), e) for e in subschema["enum"] if isinstance(e, (str, int, float, bool))}
        checks.append(lambda v: isinstance(v, (str, int, float, bool)) and (type(v), v) in allowed)
    if "minimum" in subschema:
        low = subschema["minimum"]
        checks.append(lambda v: type(v) not in _NUMBER or v >= low)
    if "maximum" in subschema:
        high = subschema["maximum"]
        checks.append(lambda v: type(v) not in _NUMBER or v <= high)
    if "pattern" in subschema:
        try:
            pattern = re.compile(subschema["pattern"])
        except (re.error, TypeError):
            return None
        checks.append(lambda v: type(v) is not str or pattern.search(v) is not None)
    if "minLength" in subschema:
        min_length = subschema["minLength"]
        checks.append(lambda v: type(v) is not str or len(v) >= min_length)
    if "minItems" in subschema:
        min_items = subschema["minItems"]
        checks.append(lambda v: type(v) is not list or len(v) >= min_items)
    if "items" in subschema:
        item = _fast_test(subschema["items"])
        if item is None:
            return None
        checks.append(lambda v: type(v) is not list or all(item(x) for x in v))
    if {"properties", "additionalProperties", "required"} & set(subschema):
        props = {k: _fast_test(sub) for k, sub in (subschema.get("properties") or {}).items()}
        extra = subschema.get("additionalProperties", True)
        extra_test = extra if isinstance(extra, bool) else _fast_test(extra)
        required = list(subschema.get("required", ()))

        def fits_object(v: Any) -> bool:
            if type(v) is not dict:
                return True
            if any(r not in v for r in required):
                return False
            for key, value in v.items():
                test = props.get(key, extra_test) if key in props else extra_test
                if test is True:
                    continue
                if test is False or test is None or not test(value):
                    return False
            return True

        checks.append(fits_object)
    return lambda v: all(check(v) for check in checks)


@lru_cache(maxsize=None)
def _validator_class() -> Any:
    import jsonschema

    base = jsonschema.Draft202012Validator
    items, properties, additional, property_names = (
        base.VALIDATORS[k] for k in ("items", "properties", "additionalProperties", "propertyNames"))
    tests: dict[int, tuple[Any, Fast | None]] = {}  # id(subschema) -> (subschema kept alive, its test)

    def test_of(subschema: Any) -> Fast | None:
        entry = tests.get(id(subschema))
        if entry is None or entry[0] is not subschema:
            entry = tests[id(subschema)] = (subschema, _fast_test(subschema))
        return entry[1]

    def fast_items(validator: Any, sub: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
        test = test_of(sub)
        if test is None or not isinstance(instance, list) or "prefixItems" in schema:
            yield from items(validator, sub, instance, schema)
            return
        for index, item in enumerate(instance):
            if not test(item):
                yield from validator.descend(item, sub, path=index)

    def fast_properties(validator: Any, props: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
        if not isinstance(instance, dict):
            return
        for name, sub in props.items():
            if name in instance:
                test = test_of(sub)
                if test is None or not test(instance[name]):
                    yield from validator.descend(instance[name], sub, path=name, schema_path=name)

    def fast_additional(validator: Any, sub: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
        test = test_of(sub) if isinstance(sub, dict) else None
        if test is None or not isinstance(instance, dict):
            yield from additional(validator, sub, instance, schema)
            return
        known = schema.get("properties", {})
        patterns = schema.get("patternProperties")
        if patterns:
            yield from additional(validator, sub, instance, schema)
            return
        for name, value in instance.items():
            if name not in known and not test(value):
                yield from validator.descend(value, sub, path=name)

    def fast_names(validator: Any, names: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
        test = test_of(names)
        if test is None or not isinstance(instance, dict):
            yield from property_names(validator, names, instance, schema)
            return
        for name in instance:
            if not test(name):
                yield from validator.descend(instance=name, schema=names)

    del properties  # replaced whole: its only work is the descend we do
    checks = {"items": fast_items, "properties": fast_properties, "additionalProperties": fast_additional,
              "propertyNames": fast_names}
    return jsonschema.validators.extend(base, checks)  # type: ignore[no-untyped-call]


@lru_cache(maxsize=None)
def validator(name: str) -> Any:
    """The Draft 2020-12 validator of ``schemas/NAME`` (inlined refs, fast keywords), built once."""
    from importlib import resources

    schema = json.loads(resources.files("orchestra.schemas").joinpath(name).read_text("utf-8"))
    return _validator_class()(inline_refs(schema))
