"""The custom-provider example through the real server: a provider's nodes and
edges to library tasks are queryable like any others."""

from __future__ import annotations

import time

from support import ExampleProcess, PeepsServer


def test_custom_provider_example_shows_the_license_pool(
        peeps_server: PeepsServer, run_example: type[ExampleProcess]) -> None:
    example = run_example("custom-provider")
    example.wait_for_output("custom-provider: running")
    peeps_server.wait_connected(name="custom-provider")
    time.sleep(0.2)
    snap = peeps_server.jump()
    assert snap["responded"] == 1
    sid = snap["snapshot_id"]
    [pool] = peeps_server.rows(sid, """
        SELECT id, label, json_extract(attrs, '$.in_use') AS in_use,
               json_extract(attrs, '$.provider') AS provider
        FROM nodes WHERE kind = 'license_pool'""")
    assert pool["label"] == "license pool (2/2 in use)"
    assert (pool["in_use"], pool["provider"]) == (2, "licenses")
    assert pool["id"].endswith(":licenses/pool")
    rows = peeps_server.rows(sid, """
        SELECT e.kind, t.label FROM edges e JOIN nodes t ON t.id = e.src
        WHERE e.dst = ? ORDER BY t.label""", [pool["id"]])
    assert [(r["kind"], r["label"]) for r in rows] == [
        ("holds", "report_a"), ("holds", "report_b"), ("needs", "report_c")]
    assert not peeps_server.rows(sid, "SELECT id FROM nodes WHERE kind = 'provider_error'")
