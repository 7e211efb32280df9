"""JSON numbers as JSON Schema reads them: `2.0` is an integer.

msgspec refuses a float where a type says `int`, while the OpenAPI document (JSON Schema) calls
every whole number an integer; a client that writes `"timeout_s": 30.0` must be understood. Only
a body that failed for that reason is decoded again, with whole floats turned into ints exactly
where its type expects an int (never inside free JSON such as artefact content).
"""

from typing import Any, TypeVar

import msgspec
from msgspec import inspect

T = TypeVar("T")
_LISTS = (inspect.ListType, inspect.SetType, inspect.VarTupleType)


def decode(body: bytes, kind: type[T]) -> T:
    """`msgspec.json.decode(body, type=kind)`, accepting whole floats for integers."""
    try:
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        if "got `float`" not in str(exc):
            raise
        loose = msgspec.json.decode(body)
        return msgspec.convert(_whole(loose, inspect.type_info(kind)), kind)


def _whole(value: Any, info: inspect.Type) -> Any:
    if isinstance(value, float) and value.is_integer() and _takes_int(info):
        return int(value)
    if isinstance(info, inspect.UnionType):
        return next((_whole(value, t) for t in info.types if _fits(value, t)), value)
    if isinstance(info, inspect.StructType) and isinstance(value, dict):
        fields = {f.encode_name: f.type for f in info.fields}
        return {k: _whole(v, fields[k]) if k in fields else v for k, v in value.items()}
    if isinstance(info, inspect.DictType) and isinstance(value, dict):
        return {k: _whole(v, info.value_type) for k, v in value.items()}
    if isinstance(info, _LISTS) and isinstance(value, list):
        return [_whole(v, info.item_type) for v in value]
    return value


def _takes_int(info: inspect.Type) -> bool:
    if isinstance(info, inspect.IntType):
        return True
    return isinstance(info, inspect.UnionType) and any(
        isinstance(t, inspect.IntType) for t in info.types
    )


def _fits(value: Any, info: inspect.Type) -> bool:
    """Whether the union member `info` is the one a JSON `value` of this shape would decode as."""
    if isinstance(value, dict):
        return isinstance(info, inspect.StructType | inspect.DictType | inspect.TypedDictType)
    if isinstance(value, list):
        return isinstance(info, inspect.ListType | inspect.SetType | inspect.VarTupleType)
    return False
