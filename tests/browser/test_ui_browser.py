"""The investigation UI in a real browser, against the real server and real
example processes: from "it's stuck" to the line of code in three clicks."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
from browser_support import Page, SyntheticProcess, wait_until

from support import EXAMPLES, ROOT, ExampleProcess, PeepsServer

pytestmark = pytest.mark.browser

EXAMPLE_SOURCE = EXAMPLES / "channel_full_stall" / "__main__.py"


def _line_of(path: Path, text: str) -> int:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return number
    raise AssertionError(f"{text!r} not in {path}")


def _stalled_snapshot(peeps_server: PeepsServer, run_example: type[ExampleProcess]) -> int:
    example = run_example("channel-full-stall")
    example.wait_for_output("bounded_sender: sent 15")
    peeps_server.wait_connected(name="channel-full-stall")
    time.sleep(0.2)  # the 17th send is now blocked
    snap = peeps_server.jump()
    assert snap["responded"] == 1
    return int(snap["snapshot_id"])


def _open(ui: Page, url: str) -> Any:
    page = ui.page
    page.goto(url)
    return page


def test_channel_full_stall_from_suspects_to_the_line(
    peeps_server: PeepsServer, run_example: type[ExampleProcess], ui_page: Page
) -> None:
    sid = _stalled_snapshot(peeps_server, run_example)
    page = _open(ui_page, peeps_server.http_base + "/")

    # Landing view: the suspects, ranked; the full channel is one of them.
    row = (page.locator("[data-testid=suspects-table] tbody tr")
           .filter(has_text="full_channel").filter(has_text="demo.work_queue").first)
    row.wait_for()
    assert "16/16" in row.inner_text()
    assert page.locator("[data-testid=snapshot-info]").inner_text().startswith(f"#{sid}")
    ui_page.shot("test-suspects")

    # Click 1: the suspect opens the inspector on one of its nodes (the
    # analysis orders them) and marks the row; its channel is one click away.
    row.click()
    inspector = page.locator("[data-testid=inspector]")
    label = inspector.locator("[data-testid=inspector-label]")
    assert label.inner_text() in ("demo.work_queue", "bounded_sender")
    assert "sel" in (row.get_attribute("class") or "")
    if label.inner_text() != "demo.work_queue":
        row.locator("a.chip", has_text="demo.work_queue").click()
    assert label.inner_text() == "demo.work_queue"
    assert inspector.locator("[data-testid=channel-depth]").inner_text() == "16 / 16"

    # The blocked sender, and the line of code where it is blocked.
    waiter = inspector.locator("[data-testid=waiters] [data-testid=wait-row]", has_text="bounded_sender")
    waiter.wait_for()
    send_line = _line_of(EXAMPLE_SOURCE, "await queue.send(item)")
    assert f"channel_full_stall/__main__.py:{send_line}" in waiter.inner_text()
    assert "send" in waiter.inner_text()
    # Waiting-since ticks: it grows while we look at it.
    first = waiter.locator(".tick").inner_text()
    page.wait_for_timeout(1200)
    assert waiter.locator(".tick").inner_text() != first
    ui_page.shot("test-inspector-channel")

    # Click 2: the sender itself: creation site and current stack as path:line.
    waiter.locator("a.chip").click()
    assert inspector.locator("[data-testid=inspector-label]").inner_text() == "bounded_sender"
    created = inspector.locator("[data-testid=created-at]").inner_text()
    spawn_line = _line_of(EXAMPLE_SOURCE, 'spawn_tracked("bounded_sender"')
    assert created.endswith(f"channel_full_stall/__main__.py:{spawn_line}")
    stack = inspector.locator("[data-testid=stack]").inner_text()
    assert re.search(rf"channel_full_stall/__main__\.py:{send_line}\b", stack)
    waiting_on = inspector.locator("[data-testid=waiting-on]").inner_text()
    assert "demo.work_queue" in waiting_on and "16 / 16" in waiting_on

    # Click 3: the graph, focused on the suspect: needs edge sender → channel.
    inspector.get_by_role("button", name="focus in graph").click()
    canvas = page.locator("[data-testid=graph-canvas]")
    canvas.locator("g.node").first.wait_for()
    ids = canvas.locator("g.node").evaluate_all("els => els.map(e => e.dataset.id)")
    graph = peeps_server.get(f"/api/snapshots/{sid}/graph")
    by_label = {n["label"]: n["id"] for n in graph["nodes"]}
    assert by_label["bounded_sender"] in ids and by_label["demo.work_queue"] in ids
    needs = canvas.locator("path.edge.e-needs")
    assert needs.count() >= 1
    assert canvas.locator(f'g.node.sel[data-id="{by_label["bounded_sender"]}"]').count() == 1
    # Keyboard: → walks along the wait-for chain, ← back.
    canvas.focus()
    page.keyboard.press("ArrowRight")
    assert label.inner_text() == "demo.work_queue"
    page.keyboard.press("ArrowLeft")
    assert label.inner_text() == "bounded_sender"

    # The inspector's event timeline comes from the events API.
    page.evaluate("id => { location.hash = `#/snapshot/${id[0]}/node/${id[1]}?view=graph`; }",
                  [sid, by_label["demo.work_queue"]])
    events = inspector.locator("[data-testid=events]")
    events.locator("li", has_text="channel.send.blocked").wait_for()
    ui_page.shot("test-graph-focus")


def test_keyboard_navigation_and_deep_link_reload(
    peeps_server: PeepsServer, run_example: type[ExampleProcess], ui_page: Page
) -> None:
    sid = _stalled_snapshot(peeps_server, run_example)
    page = _open(ui_page, peeps_server.http_base + "/")
    table = page.locator("[data-testid=suspects-table]")
    table.locator("tbody tr").first.wait_for()
    table.focus()
    page.keyboard.press("ArrowDown")
    selected = table.locator("tbody tr.sel")
    assert selected.count() == 1
    label = page.locator("[data-testid=inspector-label]").inner_text()
    assert label
    # Enter opens the graph focused on the suspect.
    page.keyboard.press("Enter")
    page.locator("[data-testid=graph-canvas] g.node.sel").wait_for()
    url = page.url
    assert re.search(rf"#/snapshot/{sid}/node/[^?]+", url), url

    # Reload restores snapshot, view and node (live is off: the link pins it).
    page.reload()
    page.locator("[data-testid=graph-canvas] g.node.sel").wait_for()
    assert page.locator("[data-testid=inspector-label]").inner_text() == label
    assert page.locator("[data-testid=tab-graph]").get_attribute("aria-selected") == "true"
    assert page.locator("[data-testid=snapshot-info]").inner_text().startswith(f"#{sid}")

    # A hand-written deep link in the documented form opens that node.
    graph = peeps_server.get(f"/api/snapshots/{sid}/graph")
    task = next(n for n in graph["nodes"] if n["label"] == "stalled_receiver")
    page.goto(f"{peeps_server.http_base}/#/snapshot/{sid}/node/{task['id']}")
    page.locator("[data-testid=inspector-label]", has_text="stalled_receiver").wait_for()
    waiting_on = page.locator("[data-testid=waiting-on]").inner_text()
    assert "stalled_receiver.forgot_to_recv" in waiting_on

    # Timeline: a second snapshot; the header moves back to the first with "[".
    second = peeps_server.jump()["snapshot_id"]
    page.goto(f"{peeps_server.http_base}/#/snapshot/{second}?view=processes")
    page.locator("[data-testid=processes-table] tbody tr", has_text="channel-full-stall").wait_for()
    assert "responded" in page.locator("[data-testid=processes-table]").inner_text()
    page.locator("body").press("[")
    wait_until(lambda: page.locator("[data-testid=snapshot-info]").inner_text().startswith(f"#{sid}"),
               message="the timeline to step back")


def test_a_link_followed_while_the_ui_updates_is_not_undone(
    peeps_server: PeepsServer, run_example: type[ExampleProcess], ui_page: Page
) -> None:
    """The browser changes the URL at once but fires `hashchange` a task later;
    an update landing in between (here a key press, in the wild a poll's
    answer) must not write the old route back over the link."""
    sid = _stalled_snapshot(peeps_server, run_example)
    graph = peeps_server.get(f"/api/snapshots/{sid}/graph")
    task = next(n for n in graph["nodes"] if n["label"] == "stalled_receiver")
    page = _open(ui_page, f"{peeps_server.http_base}/#/snapshot/{sid}/node/{task['id']}")
    page.locator("[data-testid=inspector-label]", has_text="stalled_receiver").wait_for()
    second = peeps_server.jump()["snapshot_id"]
    page.evaluate(
        """id => {
          location.hash = `#/snapshot/${id}?view=processes`;
          document.dispatchEvent(new KeyboardEvent("keydown", { key: "Escape" }));
        }""", second)
    page.locator("[data-testid=processes-table] tbody tr", has_text="channel-full-stall").wait_for()
    wait_until(lambda: page.locator("[data-testid=snapshot-info]").inner_text().startswith(f"#{second}"),
               message="the linked snapshot to load")
    assert page.url.endswith(f"#/snapshot/{second}?view=processes"), page.url


def test_sql_console_runs_queries_and_shows_errors_verbatim(
    peeps_server: PeepsServer, run_example: type[ExampleProcess], ui_page: Page
) -> None:
    sid = _stalled_snapshot(peeps_server, run_example)
    page = _open(ui_page, f"{peeps_server.http_base}/#/snapshot/{sid}?view=sql")
    page.get_by_role("link", name="Blocked senders on full channels").click()
    results = page.locator("[data-testid=sql-table]")
    results.locator("tbody tr").first.wait_for()
    text = results.inner_text()
    assert "bounded_sender" in text and "demo.work_queue" in text
    cells = results.locator("tbody tr", has_text="demo.work_queue").locator("td").all_inner_texts()
    assert cells[-2:] == ["16", "16"]
    assert "1 row" in page.locator("[data-testid=sql-meta]").inner_text()
    ui_page.shot("test-sql")

    bad = "SELECT nope FROM nodes"
    page.locator("[data-testid=sql-editor]").fill(bad)
    page.locator("[data-testid=sql-editor]").press("Control+Enter")
    error = page.locator("[data-testid=sql-error]")
    error.wait_for()
    status, body = peeps_server.request("POST", "/api/sql", {"snapshot_id": sid, "sql": bad, "params": []},
                                        expect_error=True)
    assert status >= 400
    assert error.inner_text() == body["error"]["message"]

    # A write is refused by the server, and the refusal is shown as it is.
    page.locator("[data-testid=sql-editor]").fill("DELETE FROM nodes")
    page.locator("[data-testid=sql-run]").click()
    page.wait_for_function("() => document.querySelector('[data-testid=sql-error]')?.textContent.length > 0")
    assert "nodes" in peeps_server.get(f"/api/snapshots/{sid}/graph")


def test_threads_tab_shows_sampled_threads(
    peeps_server: PeepsServer, run_example: type[ExampleProcess], ui_page: Page
) -> None:
    sid = _stalled_snapshot(peeps_server, run_example)
    page = _open(ui_page, f"{peeps_server.http_base}/#/snapshot/{sid}?view=threads")
    table = page.locator("[data-testid=threads-table]")
    row = table.locator("tbody tr", has_text="MainThread")
    row.wait_for()
    graph = peeps_server.get(f"/api/snapshots/{sid}/graph")
    main = next(n for n in graph["nodes"] if n["kind"] == "thread" and n["label"] == "MainThread")
    assert main["attrs"]["verdict"] in row.inner_text()
    top = main["attrs"]["dominant_frames"][0]["frame"].split(" in ")[0]
    assert top in row.inner_text()
    row.click()
    assert page.locator("[data-testid=inspector-label]").inner_text() == "MainThread"
    ui_page.shot("test-threads")


def test_threads_and_requests_tabs_without_data(
    peeps_server: PeepsServer, synthetic: type[SyntheticProcess], ui_page: Page
) -> None:
    synthetic(40, threads=0)
    peeps_server.wait_connected(name="synthetic")
    sid = peeps_server.jump()["snapshot_id"]
    page = _open(ui_page, f"{peeps_server.http_base}/#/snapshot/{sid}?view=threads")
    page.locator("[data-testid=threads-empty]", has_text="No threads sampled in this snapshot").wait_for()
    # The synthetic graph has requests: each with its chain.
    page.locator("[data-testid=tab-requests]").click()
    row = page.locator("[data-testid=requests-table] tbody tr", has_text="GET /stage/1").first
    row.wait_for()
    assert "response to GET /stage/1" in row.inner_text()


def test_jump_now_and_live_refresh(peeps_server: PeepsServer, run_example: type[ExampleProcess],
                                   ui_page: Page) -> None:
    sid = _stalled_snapshot(peeps_server, run_example)
    page = _open(ui_page, peeps_server.http_base + "/")
    info = page.locator("[data-testid=snapshot-info]")

    def shows(n: int) -> bool:
        words = info.inner_text().split()  # empty while the page is still loading
        return bool(words) and words[0] == f"#{n}"

    wait_until(lambda: shows(sid), message=f"snapshot #{sid}", state=info.inner_text)
    assert page.locator("[data-testid=live-toggle]").get_attribute("aria-pressed") == "true"
    chip = page.locator("[data-testid=header-processes]")
    # The chip renders after the snapshot label: wait for it, do not read it once.
    wait_until(lambda: "channel-full-stall" in chip.inner_text(),
               message="the process chip to name channel-full-stall", state=chip.inner_text)

    page.locator("[data-testid=jump-now]").click()
    wait_until(lambda: shows(sid + 1), timeout=30, message="Jump now to show the new snapshot",
               state=info.inner_text)

    # Live: a snapshot taken elsewhere appears by itself (the UI polls every 2 s).
    peeps_server.jump()
    wait_until(lambda: shows(sid + 2), timeout=30,
               message="live refresh to follow the newest snapshot", state=info.inner_text)
    # Live off: the view stays pinned.
    page.locator("[data-testid=live-toggle]").click()
    assert page.locator("[data-testid=live-toggle]").get_attribute("aria-pressed") == "false"
    peeps_server.jump()
    time.sleep(3)
    assert shows(sid + 2), info.inner_text()


def test_a_process_that_does_not_answer_shows_as_timeout(tmp_path: Path, ui_page: Page) -> None:
    server = PeepsServer(tmp_path / "peeps.sqlite", extra_env={"PEEPS_SNAPSHOT_TIMEOUT_MS": "700"}).start()
    talker = mute = None
    try:
        talker = SyntheticProcess(server.dashboard, 30, name="answers", threads=0)
        mute = SyntheticProcess(server.dashboard, 30, name="silent", mute=True)
        server.wait_connected(2)
        snap = server.jump()
        assert snap["timed_out"] == 1
        page = _open(ui_page, f"{server.http_base}/#/snapshot/{snap['snapshot_id']}")
        chips = page.locator("[data-testid=header-processes]")
        chips.locator(".proc-chip.st-timeout", has_text="silent").wait_for()
        assert "timeout" in chips.locator(".proc-chip", has_text="silent").inner_text()
        assert chips.locator(".proc-chip.st-responded", has_text="answers").count() == 1
        assert "partial" in page.locator("[data-testid=snapshot-info]").inner_text()
        page.locator("[data-testid=tab-processes]").click()
        row = page.locator("[data-testid=processes-table] tbody tr", has_text="silent")
        assert "timeout" in row.inner_text()
        ui_page.shot("test-partial-snapshot")
    finally:
        for proc in (talker, mute):
            if proc:
                proc.stop()
        server.stop()


def test_two_thousand_node_snapshot_renders_and_stays_interactive(
    peeps_server: PeepsServer, synthetic: type[SyntheticProcess], ui_page: Page
) -> None:
    synthetic(2000)
    peeps_server.wait_connected(name="synthetic")
    sid = peeps_server.jump()["snapshot_id"]
    page = _open(ui_page, f"{peeps_server.http_base}/#/snapshot/{sid}?view=graph")
    canvas = page.locator("[data-testid=graph-canvas]")
    page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=graph-canvas]').dataset.nodes) >= 2000",
        timeout=90_000,
    )
    assert canvas.locator("g.node").count() == 2000
    # Every edge kind has its own style; ghosts (attrs.ghost) are marked.
    for kind in ("needs", "holds", "spawned", "touches", "closed_by"):
        assert canvas.locator(f"path.edge.e-{kind}").count() > 0, kind
    styles = page.evaluate("""() => Object.fromEntries(
        ['needs', 'spawned', 'touches'].map(k => {
          const el = document.querySelector(`path.edge.e-${k}`);
          return [k, [el.getAttribute('stroke'), el.getAttribute('stroke-dasharray')]];
        }))""")
    assert styles["needs"][1] is None and styles["spawned"][1] and styles["touches"][1]
    assert styles["spawned"][1] != styles["touches"][1]
    assert canvas.locator("g.node.ghost").count() > 0
    ui_page.shot("test-graph-2000")

    # Search finds a node by name and selects it.
    search = page.locator("[data-testid=graph-search]")
    search.fill("stage3.worker1")
    search.press("Enter")
    page.locator("[data-testid=inspector-label]", has_text="stage3.worker1").wait_for()
    assert canvas.locator("g.node.sel").count() == 1

    # Filters re-lay out: hiding a node kind removes its nodes.
    page.locator("[data-testid=filter-kind-future]").uncheck()
    page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=graph-canvas]').dataset.nodes) < 2000",
        timeout=90_000,
    )
    assert canvas.locator("g.node.k-future").count() == 0

    # Focus mode: a node and its neighbourhood only.
    page.locator("[data-testid=focus-toggle]").click()
    page.wait_for_function(
        "() => Number(document.querySelector('[data-testid=graph-canvas]').dataset.nodes) < 60",
        timeout=30_000,
    )
    assert canvas.locator("g.node.sel").count() == 1


def _jump_until(peeps_server: PeepsServer, ready: Any, what: str, timeout: float = 20.0) -> int:
    """Take snapshots until ``ready(snapshot_id)`` holds (the scenario has reached its stall)."""
    deadline = time.monotonic() + timeout
    while True:
        sid = int(peeps_server.jump()["snapshot_id"])
        if ready(sid):
            return sid
        if time.monotonic() > deadline:
            raise AssertionError(f"no snapshot showed {what} within {timeout:g}s")
        time.sleep(0.3)


def test_wait_chain_follows_a_request_into_another_process(
    peeps_server: PeepsServer, run_example: type[ExampleProcess], ui_page: Page
) -> None:
    example = run_example("rpc-stuck-request")
    example.wait_for_output("client: GET /reserve/42")
    peeps_server.wait_connected(2)

    def joined(sid: int) -> bool:
        graph = peeps_server.get(f"/api/snapshots/{sid}/graph")
        return any(e["kind"] == "needs" and e["attrs"].get("cross_process") for e in graph["edges"])

    sid = _jump_until(peeps_server, joined, "the request joined to its response")
    graph = peeps_server.get(f"/api/snapshots/{sid}/graph")
    checkout = next(n for n in graph["nodes"] if n["kind"] == "task" and n["label"] == "checkout")
    page = _open(ui_page, f"{peeps_server.http_base}/#/snapshot/{sid}/node/{checkout['id']}?view=requests")
    chain = page.locator("[data-testid=wait-chain]")
    chain.wait_for()
    text = chain.inner_text()
    # client task → its request → the server's response → handler → semaphore ⇢ its holder
    for part in ("checkout", "GET /reserve/42", "GET /reserve/{item}", "inventory.permits", "held by",
                 "inventory_janitor"):
        assert part in text, (part, text)
    assert text.index("GET /reserve/42") < text.index("inventory.permits") < text.index("inventory_janitor")
    # The Requests tab shows the request with the server's response after it.
    row = page.locator("[data-testid=requests-table] tbody tr").filter(has_text="rpc-stuck-client").first
    row.wait_for()
    assert "GET /reserve/{item}" in row.inner_text()
    ui_page.shot("test-wait-chain-rpc")


def test_deadlock_suspect_shows_the_cycle(
    peeps_server: PeepsServer, run_example: type[ExampleProcess], ui_page: Page
) -> None:
    example = run_example("mutex-lock-order-inversion")
    example.wait_for_output("running")
    peeps_server.wait_connected(name="mutex-lock-order-inversion")

    def deadlocked(sid: int) -> bool:
        suspects = peeps_server.get(f"/api/snapshots/{sid}/suspects")["suspects"]
        return any(s["kind"] == "deadlock" for s in suspects)

    sid = _jump_until(peeps_server, deadlocked, "the deadlock")
    page = _open(ui_page, f"{peeps_server.http_base}/#/snapshot/{sid}")
    row = page.locator("[data-testid=suspects-table] tbody tr").filter(has_text="deadlock").first
    row.click()
    chain = page.locator("[data-testid=wait-chain]")
    chain.wait_for()
    assert "cycle" in page.locator("[data-testid=inspector]").inner_text()
    assert "demo.shared.left" in chain.inner_text() and "demo.shared.right" in chain.inner_text()
    # Enter: the graph focused on the cycle, its wait-for edges drawn as a chain.
    page.locator("[data-testid=suspects-table]").focus()
    page.keyboard.press("Enter")
    canvas = page.locator("[data-testid=graph-canvas]")
    canvas.locator("g.node.sel").wait_for()
    assert canvas.locator("path.edge.chain").count() >= 4
    ui_page.shot("test-deadlock-cycle")


def test_a_two_thousand_task_fan_in_folds_into_one_node(
    peeps_server: PeepsServer, synthetic: type[SyntheticProcess], ui_page: Page
) -> None:
    synthetic(2000, shape="fan-in")
    peeps_server.wait_connected(name="synthetic")
    sid = peeps_server.jump()["snapshot_id"]
    page = _open(ui_page, f"{peeps_server.http_base}/#/snapshot/{sid}?view=graph")
    canvas = page.locator("[data-testid=graph-canvas]")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=graph-canvas]').dataset.nodes !== undefined",
        timeout=60_000,
    )
    group = canvas.locator("g.node.agg")
    assert group.count() == 1
    assert "1,997 × task" in (group.text_content() or "")
    assert canvas.locator("g.node").count() < 10
    ui_page.shot("test-fan-in")

    # Search reaches a folded task: it comes out of the group, selected.
    search = page.locator("[data-testid=graph-search]")
    search.fill("fanin.worker1500")
    search.press("Enter")
    page.locator("[data-testid=inspector-label]", has_text="fanin.worker1500").wait_for()
    canvas.locator('g.node.sel').wait_for()
    assert "1,996 × task" in (canvas.locator("g.node.agg").text_content() or "")
    waiting = page.locator("[data-testid=waiting-on]").inner_text()
    assert "pool.lock" in waiting and "acquire" in waiting


def test_a_finished_tasks_lifetime_does_not_tick_a_live_tasks_age_does(
    peeps_server: PeepsServer, run_example: type[ExampleProcess], ui_page: Page,
    tmp_path: Path,
) -> None:
    """A finished task's durations stop when it finishes (its node is the
    same in every later snapshot): the inspector shows its age as "lived",
    still; a live task's age goes on ticking."""
    go = tmp_path / "go"
    example = run_example(str(ROOT / "tests/programs/finishing.py"), args=[str(go)])
    example.wait_for_output("started")
    peeps_server.wait_connected(name="finishing")
    peeps_server.jump()  # sees short_job live (tasks are adopted at a snapshot)
    go.touch()
    example.wait_for_output("finished")
    sid = int(peeps_server.jump()["snapshot_id"])
    graph = peeps_server.get(f"/api/snapshots/{sid}/graph")
    by_label = {n["label"]: n for n in graph["nodes"]}
    job, keeper = by_label["short_job"], by_label["keeper"]
    assert job["attrs"]["outcome"] == "done" and keeper["attrs"]["state"] == "pending"
    lifetime = job["attrs"]["age_ns"]
    assert 0 < lifetime < 60 * 10**9

    page = ui_page.page
    facts = page.locator("[data-testid=inspector] dl.kv")
    page.goto(f"{peeps_server.http_base}/#/snapshot/{sid}/node/{job['id']}")
    lived = facts.locator("dt", has_text=re.compile("^lived$"))
    lived.wait_for()
    assert facts.locator("dt", has_text=re.compile("^age$")).count() == 0
    value = lived.locator("xpath=following-sibling::dd[1]")
    first = value.inner_text()
    page.wait_for_timeout(1200)
    assert value.inner_text() == first

    page.goto(f"{peeps_server.http_base}/#/snapshot/{sid}/node/{keeper['id']}")
    age = facts.locator("dt", has_text=re.compile("^age$"))
    age.wait_for()
    value = age.locator("xpath=following-sibling::dd[1]")
    first = value.inner_text()
    page.wait_for_timeout(1200)
    assert value.inner_text() != first
