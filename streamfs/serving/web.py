"""The web view: server-rendered HTML with a little JavaScript, no build step.

- ``/``: every feature view (description, version, entity, source) with its
  freshness (newest event time, lag behind now) and its source's event rate and
  dead-letter count, refreshed from ``/v1/freshness`` every few seconds; and an
  entity look-up whose values update live from ``/v1/stream/{view}/{entity}``.
- ``/views/{name}``: a view's versions and features; ``/features/{name}``: a
  feature's versions and lineage.

``/v1/stream/{view}/{entity}`` is a server-sent event stream: an ``update`` event
with the row (as ``GET /v1/features/online/...`` returns it) at once and again
whenever the stored state changes, re-read every ``stream_interval_s``; a comment
every 15 s keeps proxies from closing an idle stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from html import escape
from typing import Any

from aiohttp import web

from streamfs.online import read_online_async
from streamfs.serving.app import SERVER
from streamfs.serving.freshness import view_freshness

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:70rem}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}code{background:#f4f4f4;padding:0 .2rem}
.muted{color:#777}input,select,button{font-size:1rem;margin-right:.5rem}
"""


def _page(title: str, body: str) -> web.Response:
    html = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><p><a href='/'>streamfs</a></p>"
        f"<h1>{escape(title)}</h1>{body}</body></html>"
    )
    return web.Response(text=html, content_type="text/html")


def _table(headers: list[str], rows: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f" id='{table_id}'" if table_id else ""
    return f"<table{ident}><tr>{head}</tr>{body}</table>"


_INDEX_JS = """
const fmt = ms => ms == null ? '-' : new Date(ms).toISOString();
async function freshness() {
  const r = await fetch('/v1/freshness'); if (!r.ok) return;
  const data = await r.json();
  for (const v of data.views) {
    const cell = document.getElementById('fresh-' + v.view); if (!cell) continue;
    const src = data.sources[v.source] || {};
    cell.textContent = `last event ${fmt(v.last_event_time_ms)}, lag ${v.lag_ms == null ? '-' :
      (v.lag_ms / 1000).toFixed(1) + ' s'} (${v.entities_seen} entities); source ` +
      `${src.events ?? '-'} events, ${src.events_per_s == null ? '-' :
      src.events_per_s.toFixed(1)}/s, DLQ ${src.dlq_events ?? '-'}`;
  }
}
freshness(); setInterval(freshness, 3000);
let stream = null;
function lookUp(ev) {
  ev.preventDefault();
  const view = document.getElementById('view').value;
  const entity = document.getElementById('entity').value.trim();
  if (!entity) return;
  if (stream) stream.close();
  const out = document.getElementById('values');
  out.innerHTML = '<tr><td class=muted>connecting...</td></tr>';
  stream = new EventSource(`/v1/stream/${encodeURIComponent(view)}/${encodeURIComponent(entity)}`);
  stream.addEventListener('update', e => {
    const row = JSON.parse(e.data);
    let html = '<tr><th>feature</th><th>value</th></tr>';
    for (const [k, v] of Object.entries(row.features)) {
      html += `<tr><td>${k}</td><td id="value-${k}">${v == null ? 'null' : v}</td></tr>`;
    }
    const last = Object.values(row.last_event_time_ms)[0];
    html += `<tr><td>last event</td><td id="last-event">${fmt(last)}</td></tr>`;
    out.innerHTML = html;
    document.getElementById('status').textContent = 'live, updated ' + new Date().toISOString();
  });
  stream.onerror = () => { document.getElementById('status').textContent = 'disconnected'; };
}
document.getElementById('lookup').addEventListener('submit', lookUp);
"""


async def index(request: web.Request) -> web.Response:
    catalog = request.app[SERVER].catalog
    views = catalog.views()
    rows = [
        [
            f"<a href='/views/{escape(v['name'])}'>{escape(v['name'])}</a>",
            escape(v["description"]),
            str(v["version"]),
            escape(v["entity"]),
            f"{escape(v['source'])} (<code>{escape(v['topic'])}</code>)",
            str(len(v["features"])),
            f"<span id='fresh-{escape(v['name'])}' class='muted'>...</span>",
        ]
        for v in views
    ]
    options = "".join(f"<option>{escape(v['name'])}</option>" for v in views)
    body = (
        "<h2>Feature views</h2>"
        + _table(
            ["view", "description", "version", "entity", "source", "features", "freshness"],
            rows,
            "views",
        )
        + "<p><a href='/v1/registry/features'>all features (JSON)</a> ·"
        " <a href='/openapi.json'>API</a> · <a href='/metrics'>metrics</a></p>"
        "<h2>Entity look-up</h2><form id='lookup'>"
        f"<select id='view'>{options}</select>"
        "<input id='entity' placeholder='entity key, e.g. u000042'>"
        "<button type='submit'>Look up</button></form>"
        "<p id='status' class='muted'></p><table id='values'></table>"
        f"<script>{_INDEX_JS}</script>"
    )
    return _page("Feature views", body)


async def view_page(request: web.Request) -> web.Response:
    data = request.app[SERVER].catalog.view(request.match_info["name"])
    versions = _table(
        ["version", "state version", "who", "when", "changes", "retired"],
        [
            [
                str(v["version"]),
                str(v["state_version"]),
                escape(v["who"]),
                _when(v["when_ms"]),
                escape("; ".join(v["changes"])),
                "yes" if v["retired"] else "",
            ]
            for v in data["versions"]
        ],
    )
    features = _table(
        ["feature", "type", "version", "description"],
        [
            [
                f"<a href='/features/{escape(f['name'])}'>{escape(f['name'])}</a>",
                escape(str(f.get("data_type", ""))),
                str(f.get("version", "")),
                escape(str(f.get("description", ""))),
            ]
            for f in data["features"]
        ],
    )
    body = (
        f"<p>{escape(data['description'])}</p><p>entity <b>{escape(data['entity'])}</b>"
        f" (key <code>{escape(data['join_key'])}</code>), source <b>{escape(data['source'])}</b>"
        f" (topic <code>{escape(data['topic'])}</code>), owner {escape(data['owner'])}</p>"
        f"<h2>Features</h2>{features}<h2>Versions</h2>{versions}"
    )
    return _page(f"View {data['name']}", body)


async def feature_page(request: web.Request) -> web.Response:
    data = request.app[SERVER].catalog.feature(request.match_info["name"])
    lineage = data["lineage"]
    chain = (
        f"topic <code>{escape(lineage['topic'])}</code> (subject"
        f" <code>{escape(lineage['schema_subject'])}</code>) → source"
        f" {escape(lineage['source'])} → view <a href='/views/{escape(lineage['view'])}'>"
        f"{escape(lineage['view'])}</a> → <b>{escape(data['name'])}</b>"
    )
    links = {
        k: ", ".join(f"<a href='/features/{escape(n)}'>{escape(n)}</a>" for n in lineage[k]) or "-"
        for k in ("upstream", "downstream")
    }
    versions = _table(
        ["version", "view", "view version", "who", "when", "served"],
        [
            [
                str(v["version"]),
                escape(v["view"]),
                str(v["view_version"]),
                escape(v["who"]),
                _when(v["when_ms"]),
                "yes" if v["served"] else "",
            ]
            for v in data["versions"]
        ],
    )
    body = (
        f"<p>{escape(data['description'])}</p><p>type {escape(data['data_type'])},"
        f" {escape(data['kind'])}, version {data['version']}</p>"
        f"<pre>{escape(json.dumps(data['spec'], indent=2))}</pre>"
        f"<h2>Lineage</h2><p>{chain}</p><p>upstream: {links['upstream']}</p>"
        f"<p>downstream: {links['downstream']}</p><h2>Versions</h2>{versions}"
    )
    return _page(f"Feature {data['name']}", body)


def _when(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


async def freshness(request: web.Request) -> web.Response:
    server = request.app[SERVER]
    views = []
    if server.redis is not None:
        now = server.clock()
        for name, layout in server.catalog.layouts.items():
            fresh = await view_freshness(server.redis, layout, server.settings.namespace, now)
            source = server.catalog.state.view(name).source.name
            views.append({**dataclasses.asdict(fresh), "source": source})
    stats = server.topic_stats.latest if server.topic_stats is not None else {}
    sources = {name: dataclasses.asdict(s) for name, s in stats.items()}
    return web.json_response({"views": views, "sources": sources})


async def stream(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER]
    view = request.match_info["view"]
    layout = server.catalog.layout(view)  # 404 before the stream opens
    entity = request.match_info["entity"]
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    features = [f"{view}:{n}" for n in layout.feature_names]
    last: Any = None
    idle_s = 0.0
    while True:
        layout = server.catalog.layouts.get(view, layout)
        rows = await read_online_async(
            server.redis,
            {view: layout},
            [entity],
            features,
            server.clock(),
            server.settings.namespace,
            server.value_cache,
        )
        row = rows[0].to_dict()
        row["features"] = {k.partition(":")[2]: v for k, v in row["features"].items()}
        current = (row["features"], row["last_event_time_ms"])
        if current != last:
            payload = json.dumps(row, default=str)
            await response.write(f"event: update\ndata: {payload}\n\n".encode())
            last, idle_s = current, 0.0
        elif idle_s >= 15:
            await response.write(b": keep-alive\n\n")
            idle_s = 0.0
        await asyncio.sleep(server.options.stream_interval_s)
        idle_s += server.options.stream_interval_s


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", index)
    app.router.add_get("/views/{name}", view_page)
    app.router.add_get("/features/{name}", feature_page)
    app.router.add_get("/v1/freshness", freshness)
    app.router.add_get("/v1/stream/{view}/{entity}", stream)
