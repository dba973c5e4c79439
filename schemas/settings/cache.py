"""Settings of the result cache: its own Redis instance, its bound, its lifetime and its scope."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CacheSettings(BaseModel):
    """The result cache (issue 20): a second Redis instance that may evict, apart from the results."""

    # --- Result cache ------------------------------------------------------------------------
    cache_redis_url: str = Field(
        "",
        description=(
            "The result cache's own Redis (empty = no cache). It must be another instance than the "
            "result store's, with an evicting `maxmemory-policy` (e.g. `allkeys-lru`): a worker refuses "
            "to start otherwise, so the cache can never evict or slow stored results. The local stack "
            "starts one on this URL's port when it is on 127.0.0.1"
        ),
    )
    cache_ttl_s: int = Field(
        3_600, ge=1, description="Each cached output lives this long after it was computed"
    )
    cache_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024 * 1024,
        description=(
            "The cache instance's `maxmemory` when the local stack starts it (least recently used "
            "entries are evicted past it); an external instance keeps its own"
        ),
    )
    cache_shared: bool = Field(
        False,
        description=(
            "Share cached outputs across tenants. Off (the default), each tenant has its own entries: a "
            "shared cache lets one tenant time whether another sent a text"
        ),
    )
