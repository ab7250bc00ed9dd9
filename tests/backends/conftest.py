from tests.redis_fixtures import own_redis, redis_server, redis_url

__all__ = ["own_redis", "redis_server", "redis_url"]
