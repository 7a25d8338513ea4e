"""Post a per-frame series to Redis, as the 2018 Eiger summing tool did, with an expiry.

The value is JSON: {"source", "image", "sum", "pixels_used", "statistics"}.
The key is `<prefix>:<file name>`. Errors (server unreachable, wrong
password) become a DataError with one line; callers write their files first.
"""

import json

from dials_diffuse.util.errors import DataError

SECONDS_PER_DAY = 86400


def redis_key(prefix, source_name):
    """The key for a source file: '<prefix>:<file name>' (no directories)."""
    from pathlib import Path

    name = Path(str(source_name)).name
    return f"{prefix}:{name}" if prefix else name


def post_series(key, payload, host, port=6379, db=0, password=None, expire_days=1.0):
    """Store `payload` (JSON-serialisable) under `key` with an expiry in days.

    Returns
    -------
    int
        The expiry set, in seconds.
    """
    try:
        import redis
    except ImportError as error:
        raise DataError(
            "redis.enabled needs the 'redis' package: pip install redis"
        ) from error
    seconds = max(1, int(round(float(expire_days) * SECONDS_PER_DAY)))
    client = redis.Redis(
        host=host,
        port=port,
        db=db,
        password=password or None,
        socket_connect_timeout=5,
        socket_timeout=10,
    )
    try:
        client.set(key, json.dumps(payload), ex=seconds)
    except redis.exceptions.RedisError as error:
        raise DataError(f"Redis at {host}:{port} (db {db}): {error}") from error
    finally:
        client.close()
    return seconds
