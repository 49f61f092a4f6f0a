"""Reports opened in a real headless browser (Debian's Chromium, driven by Playwright).

For every example and for the 4.2 -> 4.3 diff: the page renders (a screenshot that is
not blank, kept under out/test-artifacts/report/ for review), every rule of the matrix
has a visible arrow between the right ends and a table row, every change of the diff
is drawn and listed (breaking first), and the browser fetched nothing but the file.
Expectations come from `plan --format json` and `diff --format json`, not from the
report's own code.
"""

from __future__ import annotations

import base64
import shutil

import pytest
from reportcheck import (
    cli,
    diff_json,
    ends,
    many_address_profile,
    plan_json,
    port_words,
    stateless_profile,
)

from conftest import EXAMPLES, ROOT

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip(
    "playwright.sync_api", reason="needs playwright (pip install -e '.[test]')"
)
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)"
    ),
    pytest.mark.skipif(
        shutil.which("dot") is None,
        reason="needs Graphviz's dot (Debian: apt-get install graphviz)",
    ),
]

ARTIFACTS = ROOT / "out" / "test-artifacts" / "report"
AWS = ROOT / "profiles/aws-private-vpn.yaml"
# Chromium on a closed network: no background connections, no sandbox as root.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The diagram's colour of each kind of change (templates/report/flows.dot.j2).
KIND_COLOURS = {
    "removed": (0xB0, 0x00, 0x20),
    "narrowed": (0x8A, 0x4B, 0x00),
    "added": (0x1B, 0x6E, 0x20),
    "widened": (0x0B, 0x57, 0xD0),
}

READ_DOM = """() => {
  const edges = {};
  for (const g of document.querySelectorAll('#diagram svg g.edge')) {
    const box = g.getBoundingClientRect();
    edges[g.id] = {ends: g.querySelector('title').textContent,
                   classes: g.getAttribute('class').split(' '),
                   text: [...g.querySelectorAll('text')].map(t => t.textContent).join('\\n'),
                   area: box.width * box.height};
  }
  const rows = [...document.querySelectorAll('tr.rule')].map(tr => ({
    rule: tr.dataset.rule, edge: tr.dataset.edge, text: tr.innerText,
    table: tr.closest('table').id, height: tr.getBoundingClientRect().height}));
  const changes = [...document.querySelectorAll('tr.change')].map(tr => ({
    kind: tr.dataset.kind, role: tr.dataset.role, direction: tr.dataset.direction,
    edges: tr.dataset.edges.split(' '), breaking: tr.classList.contains('breaking'),
    text: tr.innerText}));
  return {edges, rows, changes};
}"""

# Pixels of a PNG screenshot, counted in a blank page of the browser.
COUNT_PIXELS = """async ([png, colours]) => {
  const img = new Image();
  img.src = 'data:image/png;base64,' + png;
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.width; canvas.height = img.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const data = ctx.getImageData(0, 0, img.width, img.height).data;
  let ink = 0;
  const near = colours.map(() => 0);
  const distinct = new Set();
  for (let i = 0; i < data.length; i += 4) {
    const [r, g, b] = [data[i], data[i + 1], data[i + 2]];
    if (r < 235 || g < 235 || b < 235) ink++;
    colours.forEach(([cr, cg, cb], k) => {
      if (Math.abs(r - cr) < 40 && Math.abs(g - cg) < 40 && Math.abs(b - cb) < 40) near[k]++;
    });
    if (distinct.size < 1000) distinct.add((r << 16) | (g << 8) | b);
  }
  return {pixels: data.length / 4, ink, near, colours: distinct.size};
}"""


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


class Opened:
    """A page opened from a file, with every request and console error it caused."""

    def __init__(self, browser, path, name: str | None):
        self.url = path.resolve().as_uri()
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.requests: list[str] = []
        self.blocked: list[str] = []
        self.errors: list[str] = []
        # Anything but the page itself is recorded and never leaves the machine.
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on(
            "console",
            lambda m: self.errors.append(m.text) if m.type == "error" else None,
        )
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(self.url, wait_until="load")
        self.dom = self.page.evaluate(READ_DOM)
        if name is None:
            return
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.shot = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(self.shot), full_page=True)
        self.diagram = self.page.locator("#diagram .picture").screenshot()

    def _route(self, route):
        if route.request.url == self.url:
            route.continue_()
        else:
            self.blocked.append(route.request.url)
            route.abort()

    def pixels(self, png: bytes) -> dict:
        page = self.context.new_page()
        try:
            return page.evaluate(
                COUNT_PIXELS,
                [base64.b64encode(png).decode(), list(KIND_COLOURS.values())],
            )
        finally:
            page.close()

    def close(self):
        self.context.close()


def opened(browser, tmp_path, name: str, *args) -> Opened:
    out = tmp_path / f"{name}.html"
    code, _ = cli("report", *args, "-o", out)
    assert code == 0
    page = Opened(browser, out, name)
    return page


def check_offline(page: Opened) -> None:
    assert page.requests == [page.url], page.requests
    assert page.blocked == [] and page.errors == [], (page.blocked, page.errors)


def check_not_blank(page: Opened, kinds=()) -> None:
    whole = page.pixels(page.shot.read_bytes())
    assert whole["colours"] > 20 and whole["ink"] > whole["pixels"] * 0.02, whole
    diagram = page.pixels(page.diagram)
    assert diagram["ink"] > diagram["pixels"] * 0.01, diagram
    # A change's colour is on the picture exactly when the diff has that kind.
    for kind, count in zip(KIND_COLOURS, diagram["near"]):
        assert (count > 100) == (kind in kinds), (kind, diagram)


def check_rules(page: Opened, rules: list[dict]) -> None:
    rows = {row["rule"]: row for row in page.dom["rows"]}
    assert len(page.dom["rows"]) == len(rules) == len(rows)
    for rule in rules:
        row = rows[rule["name"]]
        assert row["height"] > 0
        assert row["table"] == f"rules-{rule['role']}-{rule['direction']}"
        assert rule["purpose"] in row["text"] and rule["reference"] in row["text"]
        edge = page.dom["edges"][row["edge"]]
        assert edge["area"] > 0, (rule, edge)
        pairs = {f"{s}->{d}" for s, d in ends(rule["role"], rule["direction"], rule)}
        assert edge["ends"] in pairs, (rule, edge)
        assert port_words(rule) in edge["text"], (rule, edge)


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_report_in_chromium(browser, tmp_path, name):
    path = ROOT / "profiles" / f"{name}.yaml"
    page = opened(browser, tmp_path, name, path)
    try:
        check_offline(page)
        check_not_blank(page)
        check_rules(page, plan_json(path)["rules"])
        assert page.dom["changes"] == []
    finally:
        page.close()


def test_stateless_report_in_chromium(browser, tmp_path):
    path = stateless_profile(tmp_path)
    page = opened(browser, tmp_path, "generic-baremetal-stateless", path)
    try:
        check_offline(page)
        check_not_blank(page)
        check_rules(page, plan_json(path)["rules"])
    finally:
        page.close()


def check_changes(page: Opened, expected: dict) -> None:
    """Every change of `diff --format json` listed (breaking first) and drawn."""
    listed = page.dom["changes"]
    assert len(listed) == len(expected["changes"])
    flags = [row["breaking"] for row in listed]
    assert flags == sorted(flags, reverse=True), "breaking changes come first"
    unmatched = list(listed)
    for change in expected["changes"]:
        row = next(
            r
            for r in unmatched
            if (r["kind"], r["role"], r["direction"])
            == (change["kind"], change["role"], change["direction"])
            and all(p in r["text"] for p in change["purposes"])
        )
        unmatched.remove(row)
        assert row["breaking"] == change["breaking"]
        drawn = [page.dom["edges"][e] for e in row["edges"]]
        for edge in drawn:
            assert change["kind"] in edge["classes"] and edge["area"] > 0
            assert ("breaking" in edge["classes"]) == change["breaking"]
            assert f"{change['kind']}:" in edge["text"]  # not by colour alone
        for piece in change["traffic"]:
            pairs = {
                f"{s}->{d}" for s, d in ends(change["role"], change["direction"], piece)
            }
            assert any(
                e["ends"] in pairs and port_words(piece) in e["text"] for e in drawn
            ), (change, drawn)


def edited_profile(tmp_path):
    """The VPN example with narrower admin access and more VCS and VPN addresses."""
    text = AWS.read_text()
    for old, new in (
        ("ssh_admin: [172.16.10.0/24]", "ssh_admin: [172.16.10.0/25]"),
        ("vcs: [192.0.2.0/24]", "vcs: [192.0.2.0/24, 198.51.100.0/24]"),
        ("external: [172.16.0.0/12]", "external: [172.16.0.0/12, 10.200.0.0/16]"),
    ):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "edited.yaml"
    path.write_text(text)
    return path


# name: (OLD, NEW, OLD's version, NEW's version)
DIFFS = {
    "aws-private-vpn-4.2-to-4.3": (lambda tmp: AWS, lambda tmp: AWS, None, "4.3"),
    "aws-private-vpn-4.3-to-4.2": (lambda tmp: AWS, lambda tmp: AWS, "4.3", None),
    "aws-private-vpn-edited": (lambda tmp: AWS, edited_profile, None, None),
}


@pytest.mark.parametrize("name", DIFFS)
def test_diff_report_in_chromium(browser, tmp_path, name):
    """What the diff calls breaking is red on the picture and listed first; every
    change is drawn. 4.2 -> 4.3 is the upgrade the page documents as breaking."""
    old_of, new_of, old_version, new_version = DIFFS[name]
    old, new = old_of(tmp_path), new_of(tmp_path)
    diff_args, report_args = [], []
    if old_version:
        diff_args += ["--old-version", old_version]
        report_args += ["--old-version", old_version]
    if new_version:
        diff_args += ["--new-version", new_version]
        report_args += ["--server-version", new_version]
    expected = diff_json(old, new, *diff_args)
    assert expected["changes"]
    if name == "aws-private-vpn-4.2-to-4.3":
        assert expected["breaking"], "the 4.3 upgrade is documented as breaking"
    page = opened(browser, tmp_path, name, new, "--diff", old, *report_args)
    try:
        check_offline(page)
        check_not_blank(page, {c["kind"] for c in expected["changes"]})
        version = ["--server-version", new_version] if new_version else []
        check_rules(page, plan_json(new, *version)["rules"])
        check_changes(page, expected)
    finally:
        page.close()


def test_a_thousand_addresses_in_chromium(browser, tmp_path):
    path, admin, vcs = many_address_profile(tmp_path)
    page = opened(browser, tmp_path, "acme-many", path)
    try:
        check_offline(page)
        check_not_blank(page)
        check_rules(page, plan_json(path)["rules"])
        listed = page.page.locator("#addresses").inner_text()
        assert all(c in listed for c in admin[::97] + vcs[::97])
        labels = "\n".join(e["text"] for e in page.dom["edges"].values())
        assert "198.18." not in labels and "100.64." not in labels
    finally:
        page.close()


def test_the_network_check_sees_requests_and_the_page_blocks_them(browser, tmp_path):
    """The checks above can fail: a page that loads an image is caught both ways."""
    out = tmp_path / "report.html"
    assert cli("report", AWS, "-o", out)[0] == 0
    html = out.read_text()
    leak = '<img alt="" src="http://192.0.2.1/pixel.png">'
    guarded = tmp_path / "guarded.html"
    guarded.write_text(html.replace("<main>", f"<main>{leak}"))
    page = Opened(browser, guarded, None)
    try:
        # The attempt is seen, and the page's Content-Security-Policy stops it
        # before it reaches the network.
        assert page.requests == [page.url, "http://192.0.2.1/pixel.png"]
        assert page.blocked == []
        assert any("Content Security Policy" in e for e in page.errors), page.errors
    finally:
        page.close()
    start = html.index('<meta http-equiv="Content-Security-Policy"')
    open_page = html[:start] + html[html.index(">", start) + 1 :]
    unguarded = tmp_path / "unguarded.html"
    unguarded.write_text(open_page.replace("<main>", f"<main>{leak}"))
    page = Opened(browser, unguarded, None)
    try:
        assert page.blocked == ["http://192.0.2.1/pixel.png"]
    finally:
        page.close()


LABELS = """() => {
  const picture = document.querySelector('#diagram .picture');
  const svg = picture.querySelector('svg');
  const scale = svg.getBoundingClientRect().width / svg.viewBox.baseVal.width;
  const labels = [];
  for (const edge of svg.querySelectorAll('g.edge')) {
    for (const text of edge.querySelectorAll('text')) {
      const size = parseFloat(text.getAttribute('font-size'));
      const leader = text.parentNode.querySelector('polyline');
      const path = edge.querySelector('path').getBoundingClientRect();
      let end = null;
      if (leader) {
        const pts = leader.points;
        const p = pts.getItem(pts.numberOfItems - 1);
        const m = leader.getScreenCTM();
        end = {x: m.a * p.x + m.c * p.y + m.e, y: m.b * p.x + m.d * p.y + m.f};
      }
      labels.push({
        edge: edge.id, text: text.textContent, px: size * scale * 4 / 3, end,
        path: {left: path.left, right: path.right, top: path.top, bottom: path.bottom},
      });
    }
  }
  return {top: picture.getBoundingClientRect().top, labels,
          first: document.querySelector('main section').id};
}"""


@pytest.mark.parametrize("name", ["aws-site-flows", "aws-public-ip"])
def test_the_diagram_comes_first_with_legible_labels_on_their_arrows(
    browser, tmp_path, name
):
    page = opened(
        browser, tmp_path, f"{name}-labels", ROOT / "profiles" / f"{name}.yaml"
    )
    try:
        seen = page.page.evaluate(LABELS)
    finally:
        page.close()
    assert seen["first"] == "diagram" and seen["top"] < 400, seen["top"]
    assert seen["labels"]
    for label in seen["labels"]:
        # 11 px or more as drawn on a 1400 px wide window (it was under 9).
        assert label["px"] >= 11, label
        # Each label is joined to its own arrow by a leader line that ends on it.
        end, box = label["end"], label["path"]
        assert end is not None, label
        assert box["left"] - 3 <= end["x"] <= box["right"] + 3, label
        assert box["top"] - 3 <= end["y"] <= box["bottom"] + 3, label
