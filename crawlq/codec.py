"""The wire formats: msgpack for arq jobs and our records, never pickle.

arq's `serialize_result` stores exceptions (max tries, expired, timeout) in its results; `pack` turns
any exception into `{"exc": class name, "msg": text}` so that reason survives without pickle.
"""

from __future__ import annotations

from typing import Any

import msgpack

__all__ = ["pack", "unpack"]


def _default(value: object) -> object:
    if isinstance(value, BaseException):
        return {"exc": type(value).__name__, "msg": str(value)}
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def pack(value: Any) -> bytes:
    """Serialise to msgpack (arq's `job_serializer`)."""
    return msgpack.packb(value, default=_default, use_bin_type=True)


def unpack(data: bytes) -> Any:
    """Deserialise msgpack (arq's `job_deserializer`); anything else, pickle included, raises ValueError."""
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:
        raise ValueError(f"not a msgpack payload: {exc}") from exc
