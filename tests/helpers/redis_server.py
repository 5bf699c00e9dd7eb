"""A real redis-server for the tests: the one the cluster benchmark runs (bench/redis_proc.py)."""

from bench.redis_proc import RedisServer, free_port, running_redis

__all__ = ["RedisServer", "free_port", "running_redis"]
