"""`plan --format dot` and `rulegen report` without a browser: Graphviz reads the graph,
every rule has its arrow, the page is self-contained, bad input writes nothing.

The browser tests (tests/test_report_browser.py) check the rendered page."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
from click.testing import CliRunner
from reportcheck import (
    cli,
    diff_json,
    ends,
    many_address_profile,
    plan_json,
    port_words,
    stateless_profile,
)

from conftest import ROOT
from generator.cli import main

needs_dot = pytest.mark.skipif(
    shutil.which("dot") is None,
    reason="needs Graphviz's dot (Debian: apt-get install graphviz)",
)
AWS = ROOT / "profiles/aws-private-vpn.yaml"
CIDR = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}/\d{1,2}\b")


def laid_out(dot_source: str) -> dict:
    """Graphviz's own reading of the graph (-Tjson)."""
    done = subprocess.run(
        ["dot", "-Tjson"], input=dot_source, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def arrows(graph: dict) -> list[tuple[str, str, str]]:
    names = {o["_gvid"]: o["name"] for o in graph["objects"] if "nodes" not in o}
    return [(names[e["tail"]], names[e["head"]], e["label"]) for e in graph["edges"]]


@needs_dot
def test_plan_dot_draws_every_rule(example_name):
    path = ROOT / "profiles" / f"{example_name}.yaml"
    code, source = cli("plan", path, "--format", "dot")
    assert code == 0
    drawn = arrows(laid_out(source))
    for rule in plan_json(path)["rules"]:
        for src, dst in ends(rule["role"], rule["direction"], rule):
            labels = [label for s, d, label in drawn if (s, d) == (src, dst)]
            assert any(port_words(rule) in label for label in labels), (rule, drawn)
    # Nothing drawn that no rule allows: every arrow's ends come from a rule.
    pairs = {
        pair
        for rule in plan_json(path)["rules"]
        for pair in ends(rule["role"], rule["direction"], rule)
    }
    assert {(s, d) for s, d, _ in drawn} == pairs


@needs_dot
def test_replies_of_a_stateless_profile_ride_on_their_flows(tmp_path):
    path = stateless_profile(tmp_path)
    rules = plan_json(path)["rules"]
    assert any(r.get("source_ports") for r in rules)
    code, source = cli("plan", path, "--format", "dot")
    drawn = arrows(laid_out(source))
    for rule in rules:
        for src, dst in ends(rule["role"], rule["direction"], rule):
            labels = [label for s, d, label in drawn if (s, d) == (src, dst)]
            assert any(port_words(rule) in label for label in labels), rule
            if rule.get("source_ports"):
                assert any("+ replies" in label for label in labels), rule
    stateful = ROOT / "profiles/generic-baremetal.yaml"
    _, plain = cli("plan", stateful, "--format", "dot")
    assert len(drawn) == len(arrows(laid_out(plain)))


def report(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["report", *[str(a) for a in args]])
    return result.exit_code, result.output


@needs_dot
def test_report_is_self_contained_and_deterministic(tmp_path):
    first, second = tmp_path / "a.html", tmp_path / "b.html"
    assert report(AWS, "-o", first)[0] == 0
    assert report(AWS, "-o", second)[0] == 0
    html = first.read_text()
    assert html == second.read_text()
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    # No reference to anything outside the page: links are fragments only.
    assert not re.search(r"<(script|link|img|iframe|object)\b", html, re.I)
    assert not re.search(r"url\(", html)
    targets = re.findall(r'(?:href|src)="([^"]*)"', html)
    assert targets and all(t.startswith("#") for t in targets), targets
    assert "<!DOCTYPE svg" not in html and "<?xml" not in html


@needs_dot
def test_report_default_path_is_under_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, output = report(AWS)
    assert code == 0, output
    assert (tmp_path / "out/acme-prod-report.html").is_file()


def test_bad_profile_writes_nothing(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        AWS.read_text().replace("vpc_cidr: 10.0.0.0/16", "vpc_cidr: 10.0.0.1/16")
    )
    out = tmp_path / "r.html"
    code, output = report(bad, "-o", out)
    assert code == 1
    assert f"{bad}:12: network.vpc_cidr" in output and "Traceback" not in output
    assert not out.exists()
    code, output = report(AWS, "--diff", tmp_path / "missing.yaml", "-o", out)
    assert code == 1 and "missing.yaml: cannot read" in output
    assert not out.exists()


def test_missing_graphviz_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    out = tmp_path / "r.html"
    code, output = report(AWS, "-o", out)
    assert code == 1
    assert "error: Graphviz's dot is not installed" in output
    assert not out.exists()


@needs_dot
def test_diff_against_a_snapshot(tmp_path):
    snap = tmp_path / "old.json"
    assert cli("snapshot", AWS, "-o", snap)[0] == 0
    out = tmp_path / "r.html"
    code, output = report(AWS, "--server-version", "4.3", "--diff", snap, "-o", out)
    assert code == 0, output
    html = out.read_text()
    expected = diff_json(snap, AWS, "--new-version", "4.3")
    rows = re.findall(r'<tr class="change [^"]*" data-kind="(\w+)"', html)
    assert sorted(rows) == sorted(c["kind"] for c in expected["changes"])
    # A snapshot's version is fixed: an override for it is refused, nothing written.
    out.unlink()
    code, output = report(AWS, "--diff", snap, "--old-version", "4.1", "-o", out)
    assert code == 1 and "is a snapshot" in output and not out.exists()


@needs_dot
def test_no_change_diff_says_so(tmp_path):
    out = tmp_path / "r.html"
    assert report(AWS, "--diff", AWS, "-o", out)[0] == 0
    html = out.read_text()
    assert "Traffic: no change." in html and 'class="change ' not in html


@needs_dot
def test_a_thousand_addresses_are_counted_on_the_picture_and_listed_in_full(
    tmp_path,
):
    path, admin, vcs = many_address_profile(tmp_path)
    code, source = cli("plan", path, "--format", "dot")
    assert code == 0
    labels = [label for _, _, label in arrows(laid_out(source))]
    assert all(len(CIDR.findall(label)) <= 2 for label in labels), labels
    assert "1,000 addresses" in source
    out = tmp_path / "r.html"
    assert report(path, "-o", out)[0] == 0
    html = out.read_text()
    picture = html[html.index("<svg") : html.index("</svg>")]
    assert len(CIDR.findall(picture)) < 20
    lists = html[html.index('id="addresses"') :]
    listed = set(CIDR.findall(lists))
    assert set(admin) <= listed and set(vcs) <= listed


def _luminance(hex_colour: str) -> float:
    if len(hex_colour) == 4:  # #abc is #aabbcc
        hex_colour = "#" + "".join(c * 2 for c in hex_colour[1:])
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [
        c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_text_colours_meet_wcag_aa_on_white():
    """Every text colour of the page and the diagram: contrast 4.5:1 or more on white."""
    css = (ROOT / "templates/report/report.css").read_text()
    dot = (ROOT / "templates/report/flows.dot.j2").read_text()
    colours = re.findall(r"(?<![-\w])color:\s*(#[0-9a-fA-F]{6}|#[0-9a-fA-F]{3})\b", css)
    colours += re.findall(r'fontcolor="(#[0-9a-fA-F]{6})"', dot)
    assert len(colours) >= 12
    for colour in colours:
        ratio = 1.05 / (_luminance(colour) + 0.05)
        assert ratio >= 4.5, (colour, round(ratio, 2))


@needs_dot
def test_the_page_leads_with_the_diagram(tmp_path):
    out = tmp_path / "r.html"
    assert report(ROOT / "profiles/aws-site-flows.yaml", "-o", out)[0] == 0
    html = out.read_text()
    main_part = html.split("<main>", 1)[1]
    sections = re.findall(r'<section id="([\w-]+)"', main_part)
    assert sections[0] == "diagram" and "warnings" in sections
    nav = re.findall(r'<li><a href="#([\w-]+)"', html.split("</nav>")[0])
    assert nav[0] == "diagram"


@needs_dot
def test_site_flows_are_drawn_in_their_own_style(tmp_path):
    path = ROOT / "profiles/aws-site-flows.yaml"
    out = tmp_path / "r.html"
    assert report(path, "-o", out)[0] == 0
    html = out.read_text()
    site_rules = {r["name"] for r in plan_json(path)["rules"] if r.get("site")}
    edges = dict(re.findall(r'<g id="(e\d+)" class="edge ([^"]+)">', html))
    site_edges = {e for e, classes in edges.items() if "site" in classes.split()}
    assert site_edges and site_edges != set(edges)
    for edge, classes in edges.items():
        body = html.split(f'<g id="{edge}" class="edge')[1].split("</g>\n</g>")[0]
        stroke = re.search(r'<path fill="none" stroke="(#\w+)"([^>]*)', body)
        dotted = "stroke-dasharray" in stroke.group(2)
        assert (edge in site_edges) == (stroke.group(1) == "#6a1b9a" and dotted), edge
    # An arrow is a site arrow exactly when every rule on it comes from site_flows.
    rows = re.findall(r'data-rule="([^"]+)"[^>]*data-edge="(e\d+)"', html)
    by_edge: dict[str, set] = {}
    for rule, edge in rows:
        by_edge.setdefault(edge, set()).add(rule in site_rules)
    assert {e for e, kinds in by_edge.items() if kinds == {True}} == site_edges
    assert "<strong>site flow</strong>" in html
    plain = tmp_path / "plain.html"
    assert report(AWS, "-o", plain)[0] == 0
    assert "<strong>site flow</strong>" not in plain.read_text()


@needs_dot
def test_the_change_table_marks_expected_changes(tmp_path):
    out = tmp_path / "r.html"
    code, _ = report(AWS, "--server-version", "4.3", "--diff", AWS, "-o", out)
    assert code == 0
    html = out.read_text()
    marks = re.findall(
        r'<tr class="change [^"]*" data-kind="\w+" data-expected="(\w+)"', html
    )
    expected = diff_json(AWS, AWS, "--new-version", "4.3")["changes"]
    assert len(marks) == len(expected) == 10 and set(marks) == {"true"}
    assert (
        html.count('<span class="badge expected">expected</span><div class="why">')
        == 10
    )
    assert "10 of the breaking changes are expected" in html
    # Narrowing the UI is breaking, and no upgrade note expects it.
    narrowed = tmp_path / "narrowed.yaml"
    narrowed.write_text(
        AWS.read_text().replace(
            "external: [172.16.0.0/12]", "external: [172.16.0.0/16]"
        )
    )
    out2 = tmp_path / "n.html"
    assert report(narrowed, "--diff", AWS, "-o", out2)[0] == 0
    marks = re.findall(r'data-expected="(\w+)"', out2.read_text())
    assert marks and set(marks) == {"false"}
