"""The official Python MCP client SDK (PyPI `mcp`) against a real collector.

Run by `collector/tests/e2e/mcp.rs`, which starts real etcd members and the collector (with a
viewer and an admin token and the benchmark API enabled) and passes what to expect:

    python3 mcp_client.py --url URL --binary ETCD_MONITOR --viewer-token-file F
        --admin-token-file F --members m0,m1,m2 --down m2

(`--down`: the member the test stopped; MemberUnavailable fires for it.)

Over streamable HTTP (`URL/mcp`) and over stdio (spawning `ETCD_MONITOR mcp --url URL
--token-file F`) it lists the tools, calls each and asserts real content, reads a runbook,
is refused without a token, and is refused `run_benchmark` with the viewer token and allowed
it with the admin token. Any failed check raises; the last line printed is a JSON summary.
"""

import argparse
import asyncio
import json
import sys
import time

import httpx2
from mcp import ClientSession, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

READ_TOOLS = {
    "list_clusters",
    "cluster_status",
    "cluster_members",
    "diagnosis",
    "alerts",
    "metrics_history",
    "benchmark_status",
}
ADMIN_TOOLS = {"run_benchmark"}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def payload(result):
    """The structured content of a tool result (the REST answer), or its JSON text."""
    if result.structured_content is not None:
        return result.structured_content
    return json.loads(result.content[0].text)


async def call_ok(session, name, args=None):
    result = await session.call_tool(name, args or {})
    body = payload(result)
    check(not result.is_error, f"{name}({args}) failed: {body}")
    return body


async def read_tools(session, members, down, transport):
    """Calls every read tool and checks its content against the cluster the test started."""
    tools = await session.list_tools()
    names = {t.name for t in tools.tools}
    check(READ_TOOLS | ADMIN_TOOLS <= names, f"{transport}: tools {sorted(names)}")
    for t in tools.tools:
        check(t.description, f"{transport}: tool {t.name} has no description")
        check(t.input_schema.get("type") == "object", f"{t.name} schema {t.input_schema}")
    clusters = await call_ok(session, "list_clusters")
    check(clusters["clusters"] == ["default"], f"clusters: {clusters}")
    status = await call_ok(session, "cluster_status", {"cluster": "default"})
    check(status["has_leader"] is True, f"status: {status}")
    check(sorted(m["name"] for m in status["members"]) == members, f"status members: {status}")
    reachable = {m["name"]: m["reachable"] for m in status["members"]}
    check(reachable == {m: m != down for m in members}, f"reachable: {reachable}")
    got = await call_ok(session, "cluster_members")
    check(sorted(m["name"] for m in got["members"]) == members, f"members: {got}")
    check(sum(1 for m in got["members"] if m["is_leader"]) == 1, f"one leader: {got}")
    diag = await call_ok(session, "diagnosis")
    check(isinstance(diag["members"], list), f"diagnosis: {diag}")
    alerts = await call_ok(session, "alerts", {"history": 5})
    check(alerts["cluster"] == "default", f"alerts: {alerts}")
    check(isinstance(alerts["alerts"], list), f"alerts list: {alerts}")
    check(isinstance(alerts["history"], list), f"alerts history: {alerts}")
    for a in alerts["alerts"]:
        check({"name", "severity", "state", "labels"} <= set(a), f"alert shape: {a}")
    unavailable = [
        a for a in alerts["alerts"] if a["name"] == "MemberUnavailable" and a["member"] == down
    ]
    check(unavailable and unavailable[0]["state"] == "firing", f"{down} unavailable: {alerts}")
    fired = [t for t in alerts["history"] if t["alert"]["name"] == "MemberUnavailable"]
    check(fired, f"the firing transition is in the history: {alerts['history']}")
    hist = await call_ok(
        session, "metrics_history", {"since": "10m", "step": "1s", "limit": 50}
    )
    check(hist["cluster"] == "default" and 0 < len(hist["points"]) <= 50, f"history: {hist}")
    check({p["member"] for p in hist["points"]} <= set(members), f"history members: {hist}")
    check(len({p["member"] for p in hist["points"]}) >= 2, f"history of several members: {hist}")
    # Errors carry REST's status and message; arguments past a bound are refused by name.
    missing = await session.call_tool("cluster_status", {"cluster": "no-such-cluster"})
    body = payload(missing)
    check(missing.is_error and body["status"] == 404, f"unknown cluster: {body}")
    check("unknown cluster" in body["error"], f"unknown cluster message: {body}")
    long = await session.call_tool("cluster_members", {"cluster": "x" * 129})
    check(long.is_error and "cluster: longer than 128" in long.content[0].text, f"{long}")
    big = await session.call_tool("metrics_history", {"limit": 2001})
    check(big.is_error and "limit: 2001" in big.content[0].text, f"{big}")
    typed = await session.call_tool("metrics_history", {"limit": "many"})
    check(typed.is_error and "many" in typed.content[0].text, f"{typed}")
    try:
        await session.call_tool("drop_database", {})
    except MCPError as e:
        check("not found" in str(e), f"unknown tool: {e}")
    else:
        raise AssertionError("an unknown tool was called")
    return sorted(names)


async def runbooks(session):
    listed = await session.list_resources()
    uris = {str(r.uri) for r in listed.resources}
    check("etcd-monitor://runbooks" in uris, f"resources: {sorted(uris)}")
    check("etcd-monitor://runbooks/SlowWalFsync" in uris, f"resources: {sorted(uris)}")
    read = await session.read_resource("etcd-monitor://runbooks/SlowWalFsync")
    text = read.contents[0].text
    check(text.startswith("### SlowWalFsync"), f"runbook: {text[:200]}")
    check("### MemberUnavailable" not in text, "a section holds only its alert")
    return len(uris)


async def benchmark(session, allowed, transport):
    result = await session.call_tool("run_benchmark", {"type": "write", "ops": 200, "clients": 2, "conns": 1})
    body = payload(result)
    if not allowed:
        check(result.is_error and body["status"] in (401, 403), f"{transport}: admin tool: {body}")
        check("admin" in body["error"], f"{transport}: refusal names the role: {body}")
        return None
    check(not result.is_error, f"{transport}: run_benchmark with the admin token: {body}")
    job = body["id"]
    deadline = time.monotonic() + 120
    while True:
        view = await call_ok(session, "benchmark_status", {"id": job})
        if view.get("state") in ("succeeded", "failed", "interrupted", "cancelled"):
            break
        check(time.monotonic() < deadline, f"benchmark {job} did not finish: {view}")
        await asyncio.sleep(0.5)
    check(view["state"] == "succeeded", f"benchmark {job}: {view}")
    return job


def http_client(token):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(60.0))


async def over_http(url, token, members, down, admin):
    async with http_client(token) as client:
        async with streamable_http_client(f"{url}/mcp", http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                check(init.server_info.name == "etcd-monitor", f"server info: {init}")
                out = {"tools": await read_tools(session, members, down, "http")}
                out["resources"] = await runbooks(session)
                out["benchmark"] = await benchmark(session, admin, "http")
                return out


async def http_without_token(url):
    """Viewer tokens are configured: /mcp itself refuses a caller without a token."""
    try:
        async with http_client(None) as client:
            async with streamable_http_client(f"{url}/mcp", http_client=client) as (r, w):
                async with ClientSession(r, w) as session:
                    await asyncio.wait_for(session.initialize(), 30)
    except Exception as e:  # noqa: BLE001 - any failure to connect is the refusal
        return f"{type(e).__name__}: {e}"
    raise AssertionError("an MCP session without a token was accepted")


async def over_stdio(binary, url, token_file, members, down, admin):
    params = StdioServerParameters(
        command=binary, args=["mcp", f"--url={url}", f"--token-file={token_file}"]
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            out = {"tools": await read_tools(session, members, down, "stdio")}
            out["resources"] = await runbooks(session)
            out["benchmark"] = await benchmark(session, admin, "stdio")
            return out


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--binary", required=True)
    p.add_argument("--viewer-token-file", required=True)
    p.add_argument("--admin-token-file", required=True)
    p.add_argument("--members", required=True)
    p.add_argument("--down", required=True)
    a = p.parse_args()
    members = sorted(a.members.split(","))
    viewer = open(a.viewer_token_file).read().strip()
    admin = open(a.admin_token_file).read().strip()
    summary = {
        "http_viewer": await over_http(a.url, viewer, members, a.down, False),
        "http_admin": await over_http(a.url, admin, members, a.down, True),
        "http_no_token": await http_without_token(a.url),
        "stdio_viewer": await over_stdio(
            a.binary, a.url, a.viewer_token_file, members, a.down, False
        ),
        "stdio_admin": await over_stdio(a.binary, a.url, a.admin_token_file, members, a.down, True),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except AssertionError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
