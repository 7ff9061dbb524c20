"""The annotator page in a real headless chromium (Playwright): mark, type, or reject answers."""

from __future__ import annotations

import re
import shutil

import pytest
from oracle_testlib import ADMIN, query_body

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed (apt-get install chromium)"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
expect = sync_api.expect


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, timeout=30_000)
        yield chromium
        chromium.close()


def test_annotator_page_labels_tasks(service_factory, browser):
    svc = service_factory(backend="human")
    with svc.client(ADMIN) as admin:
        admin.post("/v1/gold", json={"p1": "55555", "p2": "66666", "p3": "77777"})
        token = admin.post("/v1/annotators", json={"name": "web"}).json()["token"]
    evil = '<img src=x onerror="window.__xss = 1">'
    with svc.client() as trainer:
        trainer.post("/v1/queries", json=query_body(1, answers=("11", "12")) | {"prompt": f"Question one {evil}"})
        trainer.post("/v1/queries", json=query_body(2, answers=("21", "22")))
        trainer.post("/v1/queries", json=query_body(3, answers=("31", "32")))

    page = browser.new_page()
    page.set_default_timeout(10_000)
    page.goto(f"{svc.url}/annotate")
    page.fill("#token", token)
    page.click("#save")

    # Task 1: tick the second candidate.
    page.click("#next")
    expect(page.locator("#prompt")).to_have_text(f"Question one {evil}")  # shown as text, not markup
    assert page.locator("#prompt img").count() == 0
    assert page.locator(".cand-check").count() == 2
    page.locator(".cand-check").nth(1).check()
    page.click("#submit")
    expect(page.locator("#status")).to_have_text(re.compile("^Saved"))

    # Task 2: type the answer instead.
    page.click("#next")
    expect(page.locator("#prompt")).to_contain_text("1002")
    page.fill("#typed", "21")
    page.click("#submit")
    expect(page.locator("#status")).to_have_text(re.compile("^Saved"))

    # Task 3: none of the candidates is correct.
    page.click("#next")
    expect(page.locator("#prompt")).to_contain_text("1003")
    page.click("#none")
    expect(page.locator("#status")).to_have_text(re.compile("^Saved"))

    page.click("#next")
    expect(page.locator("#status")).to_contain_text("No task")
    html = page.content()
    assert page.evaluate("window.__xss") is None
    assert not any(gold in html for gold in ("55555", "66666", "77777"))
    page.close()

    with svc.client() as trainer:
        labels = {r["key"]: r["label"] for r in trainer.get("/v1/labels").json()["labels"]}
    assert labels["k1"] == {"answer": "12", "correct": [False, True], "source": "human"}
    assert labels["k2"] == {"answer": "21", "correct": [True, False], "source": "human"}
    assert labels["k3"] == {"answer": None, "correct": [False, False], "source": "human"}


def test_annotator_page_rejects_a_bad_token(service_factory, browser):
    svc = service_factory(backend="human", gold=False)
    page = browser.new_page()
    page.set_default_timeout(10_000)
    page.goto(f"{svc.url}/annotate")
    page.fill("#token", "not-a-token")
    page.click("#next")
    expect(page.locator("#status")).to_contain_text("401")
    assert page.is_hidden("#task")
    page.close()
