"""The viewer's Markdown renderer (``static/md.js``) in a real browser, WITHOUT the CSP:
its own guarantee must hold when no policy stands behind it.

The page is ``about:blank`` with md.js inlined (no Content-Security-Policy). Each input
is rendered into a node attached to the document, so an injected ``<img onerror>`` or
``<svg onload>`` would fire. Checked for every input: no element has an ``on*``
attribute, no URL-bearing attribute holds a ``javascript:``/``data:``/``vbscript:`` URL,
no element outside the renderer's own vocabulary exists, and ``window.__pwned`` stays
undefined (payloads set it if they ever run).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from coral_graph.viewer.web import STATIC_DIR

pytestmark = pytest.mark.browser

ISSUE_PAYLOAD = "![](a[b](https://h/onmouseover=window.__pwned=102//))"

# Known XSS payloads (HTML, attribute-breaking, URL schemes), alone and inside Markdown.
KNOWN = [
    ISSUE_PAYLOAD,
    '<img src=x onerror="window.__pwned=1">',
    "<script>window.__pwned=2</script>",
    '"><svg onload="window.__pwned=3"></svg>',
    "<iframe src=javascript:window.__pwned=4></iframe>",
    "[x](javascript:window.__pwned=5)",
    "[x](JaVaScRiPt:window.__pwned=6)",
    "[x](java\tscript:window.__pwned=7)",
    "[x](data:text/html,<script>window.__pwned=8</script>)",
    "[x](vbscript:msgbox(1))",
    '[x](https://a" onmouseover="window.__pwned=9)',
    "[x](https://a'onmouseover='window.__pwned=10)",
    '![x" onerror="window.__pwned=11](https://h/i.png)',
    '![x](https://h/" onerror="window.__pwned=12)',
    "[![img](https://h/onerror=window.__pwned=13)](https://h/x)",
    "[a[b](https://h/onmouseover=window.__pwned=14)](https://h)",
    '**[x](https://h/" onclick="window.__pwned=15)**',
    "`<img src=x onerror=window.__pwned=16>`",
    "```\n<script>window.__pwned=17</script>\n```",
    "> <img src=x onerror=window.__pwned=18>",
    "- [x](javascript:window.__pwned=19)\n- <b onmouseover=window.__pwned=20>b</b>",
    "# <svg><animate onbegin=window.__pwned=21 attributeName=x dur=1s>",
    "_<a href=javascript:window.__pwned=22>x</a>_",
    "~~<details open ontoggle=window.__pwned=23>~~",
    "&lt;img src=x onerror=window.__pwned=24&gt;",
    "<a href='javascript:window.__pwned=25'>x</a>",
    "[x](https://h)<img src=x onerror=window.__pwned=26>",
    "![](a[b](mailto:x@y.z?onmouseover=window.__pwned=27))",
    "[*x*](https://h/*y*/onmouseover=window.__pwned=28)",
    "<math><mtext><table><mglyph><style><img src=x onerror=window.__pwned=29>",
    '<noscript><p title="</noscript><img src=x onerror=window.__pwned=30>">',
]

# Markdown-ish pieces the generator combines, so the tokenizer's edges are hit often.
PIECES = [
    "![",
    "](",
    "[",
    "]",
    "(",
    ")",
    "`",
    "*",
    "**",
    "_",
    "~~",
    "\n",
    "> ",
    "# ",
    "- ",
    "1. ",
    "```",
    "<",
    ">",
    '"',
    "'",
    "=",
    "&",
    "https://h/",
    "http://h",
    "mailto:x@y",
    "javascript:",
    "data:",
    "onmouseover=",
    "onerror=",
    "window.__pwned=1",
    "<img src=x ",
    "<script>",
    "</script>",
    "<svg ",
    " ",
    "x",
]

MD_JS = (STATIC_DIR / "md.js").read_text("utf-8")

CHECK = """(src) => {
    const box = document.getElementById('box');
    const out = CoralMD.render(src);
    // (A renderer that returned HTML would be judged by what the browser makes of it.)
    if (typeof out === 'string') box.innerHTML = out; else box.replaceChildren(out);
    const bad = [];
    const allowed = new Set(['P','BR','CODE','PRE','A','SPAN','STRONG','EM','DEL','UL','OL','LI',
        'BLOCKQUOTE','H3','H4','H5','H6']);
    for (const e of box.querySelectorAll('*')) {
        if (!allowed.has(e.tagName)) bad.push('element ' + e.tagName);
        for (const a of e.attributes) {
            const name = a.name.toLowerCase();
            if (name.startsWith('on')) bad.push('attribute ' + name + ' on ' + e.tagName);
            const v = a.value.replace(/[\\u0000-\\u0020]/g, '').toLowerCase();
            if (/^(javascript|data|vbscript):/.test(v)) bad.push(name + '=' + a.value);
            const known = ['href', 'title', 'target', 'rel', 'class'];
            if (!known.includes(name)) bad.push('attribute ' + name);
        }
        if (e.tagName === 'A' && !/^(https?:|mailto:)/i.test(e.getAttribute('href') || ''))
            bad.push('href ' + e.getAttribute('href'));
    }
    return {bad, text: box.textContent, html: box.innerHTML};
}"""


@pytest.fixture(scope="module")
def md_page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.set_content("<!doctype html><body><div id=box></div></body>")
        page.add_script_tag(content=MD_JS)
        assert page.evaluate("typeof CoralMD.render") == "function"
        # No CSP here: prove it by running an inline handler ourselves.
        page.evaluate(
            "() => { const i = document.createElement('img');"
            " i.setAttribute('onerror', 'window.__probe = 1'); i.src = 'x:';"
            " document.body.append(i); }"
        )
        page.wait_for_function("window.__probe === 1", timeout=5000)
        page.evaluate("() => { delete window.__probe; document.querySelector('img').remove() }")
        yield page
    finally:
        context.close()


def check(page: Any, src: str) -> dict[str, Any]:
    got: dict[str, Any] = page.evaluate(CHECK, src)
    assert got["bad"] == [], (src, got)
    return got


def assert_never_ran(page: Any) -> None:
    page.wait_for_timeout(50)  # let any error/load handler that was created fire
    assert page.evaluate("window.__pwned") is None


def test_issue_payload_is_one_inert_placeholder(md_page: Any) -> None:
    got = check(md_page, ISSUE_PAYLOAD)
    assert md_page.locator("#box [onmouseover]").count() == 0
    span = md_page.locator("#box span.img-blocked")
    assert span.count() == 1
    assert span.get_attribute("title") == (
        "images are not loaded: a[b](https://h/onmouseover=window.__pwned=102//"
    )
    assert got["text"] == "[image])"
    assert_never_ran(md_page)


def test_markdown_still_renders(md_page: Any) -> None:
    src = (
        "## Plan\n\n- **solve** it\n- check `x<y`\n\n> quoted\n\n"
        "see [docs](https://example.org/a?b=1&c=2) and *this* and ~~that~~\n\n"
        "```\n<b>raw</b>\n```"
    )
    check(md_page, src)
    box = md_page.locator("#box")
    assert box.locator("h4").inner_text() == "Plan"
    assert box.locator("ul li").count() == 2
    assert box.locator("strong").inner_text() == "solve"
    assert box.locator("code").first.inner_text() == "x<y"
    assert box.locator("blockquote").inner_text() == "quoted"
    link = box.locator("a")
    assert link.get_attribute("href") == "https://example.org/a?b=1&c=2"
    assert link.get_attribute("rel") == "noopener noreferrer nofollow"
    assert box.locator("em").inner_text() == "this"
    assert box.locator("del").inner_text() == "that"
    assert box.locator("pre code").inner_text() == "<b>raw</b>"
    assert box.locator("b").count() == 0


@pytest.mark.parametrize("payload", KNOWN)
def test_known_payloads_stay_text(md_page: Any, payload: str) -> None:
    got = check(md_page, payload)
    # Whatever is not markup shows as the characters typed: angle brackets included.
    if "<" in payload and "`" not in payload:
        assert "<" in got["text"]
    assert_never_ran(md_page)


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.lists(
        st.one_of(st.sampled_from(PIECES), st.sampled_from(KNOWN), st.text(max_size=6)),
        max_size=14,
    ).map("".join)
)
def test_fuzz_corpus_never_makes_a_handler_or_a_script_url(md_page: Any, src: str) -> None:
    check(md_page, src)
    assert md_page.evaluate("window.__pwned") is None


def test_nothing_ran_after_the_fuzz(md_page: Any) -> None:
    assert_never_ran(md_page)
