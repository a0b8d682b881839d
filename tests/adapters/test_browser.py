"""The headless-Chromium page check (tests/fixtures/browser.py) catches what a broken page does:
an uncaught exception, a rejected promise, console.error, a script that fails to load, a request
to the network; and reports a clean page as clean, with its element counts and a screenshot."""

from __future__ import annotations

from pathlib import Path

import pytest

CLEAN = "<!DOCTYPE html><html><body><p class='x'>one</p><p class='x'>two</p></body></html>"


def page(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "page.html"
    path.write_text(f"<!DOCTYPE html><html><body><p>text</p>{body}</body></html>")
    return path


def test_a_clean_page_has_no_errors_its_counts_and_a_screenshot(chromium, tmp_path):
    path = tmp_path / "clean.html"
    path.write_text(CLEAN)
    check = chromium.open(path, selectors=(".x", ".missing"))
    assert check.errors == [] and check.requests == []
    assert check.counts == {".x": 2, ".missing": 0}
    assert check.screenshot.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.parametrize(("body", "expected"), [
    ("<script>throw new Error('boom at load')</script>", "uncaught: Error: boom at load"),
    ("<script>setTimeout(() => { throw new Error('boom later') }, 100)</script>",
     "uncaught: Error: boom later"),
    ("<script>Promise.reject(new Error('no promise'))</script>", "no promise"),
    ("<script>console.error('bad value', 42)</script>", "console.error: bad value 42"),
    ("<script>console.assert(1 === 2, 'one is not two')</script>", "one is not two"),
    ("<script src='missing.js'></script>", "missing.js"),
    # a figure script of a report whose plotly.js did not load
    ("<div id='f'></div><script>Plotly.newPlot('f', [])</script>", "Plotly is not defined"),
])
def test_a_broken_page_is_caught(chromium, tmp_path, body, expected):
    check = chromium.open(page(tmp_path, body))
    assert any(expected in e for e in check.errors), check.errors


def test_a_request_off_the_machine_is_reported(chromium, tmp_path):
    check = chromium.open(page(tmp_path, "<img src='https://cdn.example.invalid/x.png'>"))
    assert check.requests == ["https://cdn.example.invalid/x.png"]
