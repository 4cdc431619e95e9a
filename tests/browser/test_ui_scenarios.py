"""Every landed scenario is found from the Suspects view the same way: the
suspect row names the culprit, one click opens the inspector on a node of the
suspect, and the inspector shows where in the example's code it is."""

from __future__ import annotations

import time
from typing import Any

import pytest
from browser_support import Page

from support import ExampleProcess, PeepsServer

pytestmark = pytest.mark.browser

#: scenario -> (suspect kind, text the suspect row must contain,
#:              labels one of which the inspector opens on, the example's source dir)
SCENARIOS: dict[str, tuple[str, str, set[str], str]] = {
    "semaphore-starvation": ("long_wait", "permit_waiter", {"permit_waiter", "demo.api_gate"},
                             "semaphore_starvation"),
    "oneshot-sender-lost": ("long_wait", "requester", {"requester", "demo.reply(req-42)"},
                            "oneshot_sender_lost"),
    "queue-join-hang": ("long_wait", "producer", {"producer", "demo.jobs"}, "queue_join_hang"),
    "loop-blocked": ("loop_stall", "blocking_poller", {"blocking_poller", "event loop (MainThread)"},
                     "loop_blocked"),
    "thread-spin": ("spinning", "spin_worker", {"spin_worker"}, "thread_spin"),
    "custom-provider": ("long_wait", "report_c", {"report_c", "license pool (2/2 in use)"},
                        "custom_provider"),
}


def _jump_until_suspect(server: PeepsServer, kind: str, text: str, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        sid = int(server.jump()["snapshot_id"])
        suspects: list[dict[str, Any]] = server.get(f"/api/snapshots/{sid}/suspects")["suspects"]
        if any(s["kind"] == kind and text in s["title"] for s in suspects):
            return sid
        if time.monotonic() > deadline:
            raise AssertionError(f"no {kind} suspect naming {text}: {suspects}")
        time.sleep(0.3)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_scenario_is_found_from_the_suspects_view(
    scenario: str, peeps_server: PeepsServer, run_example: type[ExampleProcess], ui_page: Page
) -> None:
    kind, text, labels, source_dir = SCENARIOS[scenario]
    run_example(scenario)
    peeps_server.wait_connected()
    sid = _jump_until_suspect(peeps_server, kind, text)

    page = ui_page.page
    page.goto(f"{peeps_server.http_base}/#/snapshot/{sid}")
    row = (page.locator("[data-testid=suspects-table] tbody tr")
           .filter(has_text=kind).filter(has_text=text).first)
    row.wait_for()
    row.click()
    inspector = page.locator("[data-testid=inspector]")
    label = inspector.locator("[data-testid=inspector-label]")
    label.wait_for()
    assert label.inner_text() in labels, label.inner_text()
    # Where in the code: the example's own path:line is on screen.
    inspector.get_by_text(f"{source_dir}/__main__.py:").first.wait_for()
    ui_page.shot(f"test-scenario-{scenario}")
