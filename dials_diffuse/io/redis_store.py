"""Post a per-frame series to Redis, as the 2018 Eiger summing tool did, with an expiry.

The value is JSON: {"source", "image", "sum", "pixels_used", "statistics"}.
The key is `<prefix>:<absolute path of the source file>` unless given: unique
per data set, so runs of different folders (each with its own
``series_1_master.h5``) never overwrite each other. The password comes from
the caller or, when it gives none, from the environment variable
``DIALS_DIFFUSE_REDIS_PASSWORD`` (so that it need not be on a command line,
in a log or in a summary). Errors (server unreachable, wrong password)
become a DataError with one line; callers write their files first.
"""

import json
import os

from dials_diffuse.util.errors import DataError

SECONDS_PER_DAY = 86400
#: Where the password is read from when none is given.
PASSWORD_VARIABLE = "DIALS_DIFFUSE_REDIS_PASSWORD"


def redis_key(prefix, source_path, key=None):
    """The key for a data set: `key` if given, else '<prefix>:<absolute path>'."""
    if key:
        return key
    name = os.path.abspath(str(source_path))
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
    password = password or os.environ.get(PASSWORD_VARIABLE) or None
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
