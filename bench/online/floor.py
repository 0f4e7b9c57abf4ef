"""The machine's floor for bench/online: an aiohttp server on uvloop that answers one
route with a fixed JSON body of a feature row's size, no Redis, no middleware.

    python bench/online/floor.py --port N

What ``wrk`` measures against it is what this machine (cores shared with ``wrk``, Redis
and whatever else runs) allows any Python HTTP server; streamfs's figures read against it.
"""

from __future__ import annotations

import argparse

import uvloop
from aiohttp import web

BODY = (
    b'{"entity":"u000000","features":{"purchase_count_1h":20,"amount_sum_1h":2585.34,'
    b'"amount_mean_1h":129.267,"amount_max_1h":284.29,"amount_min_1h":15.83,'
    b'"purchase_count_24h":20,"amount_sum_24h":2585.34,"amount_mean_24h":129.267,'
    b'"amount_max_24h":284.29,"amount_min_24h":15.83},'
    b'"last_event_time_ms":{"user_purchases":1795737087621},"as_of_ms":1795737808540}'
)


async def row(request: web.Request) -> web.Response:
    return web.Response(body=BODY, content_type="application/json")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    app = web.Application()
    app.router.add_get("/v1/features/online/{view}/{entity}", row)
    app.router.add_get("/healthz", row)
    port = parser.parse_args().port
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, loop=uvloop.new_event_loop())
