"""Whether a service answers: one short Redis PING, for the start-up check and for /ready."""


def redis_ping(url: str, timeout: float) -> Exception | None:
    """PING the Redis at `url`, waiting `timeout` seconds at most; None when it answered, else
    the error (a refused connection, a timeout, a malformed URL)."""
    import redis

    client = None
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        client.ping()
    except (redis.RedisError, OSError, ValueError) as exc:
        return exc
    finally:
        if client is not None:
            client.close()
    return None
