"""The page's files as served, without a browser or a server: one source for names, nothing external."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from cassava import contract
from cassava.labels import LABELS
from cassava.server import webui
from cassava.settings import CassavaSettings

STATIC_FILES = ("index.html", "app.js", "app.css", "icon.svg")


class _Config(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.inside = False
        self.text = ""
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        self.inside = values.get("id") == "cassava-config"
        self.links += [v for k, v in attrs if k in ("src", "href") and v]

    def handle_data(self, data: str) -> None:
        if self.inside:
            self.text += data

    def handle_endtag(self, tag: str) -> None:
        self.inside = False


def _parsed() -> _Config:
    parser = _Config()
    parser.feed(webui.page_html().decode("utf-8"))
    return parser


def test_the_page_carries_the_labels_and_contract_names_from_their_owners() -> None:
    config = json.loads(_parsed().text)
    assert config == webui.page_config()
    assert [(e["code"], e["name"], e["description"]) for e in config["labels"]] == [
        (label.code, label.name, label.description) for label in LABELS
    ]
    assert (config["model"], config["input"]) == (contract.MODEL_NAME, contract.IMAGES_INPUT)
    assert config["outputs"] == {"code": contract.OUTPUT_CODE, "probabilities": contract.OUTPUT_PROBABILITIES}


def test_the_script_writes_down_no_class_or_output_name() -> None:
    script = webui.static_file("app.js").decode("utf-8")
    for name in [*(label.name for label in LABELS), contract.OUTPUT_CODE, contract.OUTPUT_PROBABILITIES]:
        assert f'"{name}"' not in script, f"app.js repeats {name!r}; read it from the page's config"


def test_every_link_is_relative_to_the_page() -> None:
    """No CDN, no font service, no leading slash: the page works offline and behind a path prefix."""
    links = _parsed().links
    assert links, "the page links its script and stylesheet"
    assert all(not re.match(r"^([a-z]+:|/)", link) for link in links), links
    for name in STATIC_FILES:
        text = webui.static_file(name).decode("utf-8")
        # The one absolute URL allowed is the SVG namespace, which is a name, never fetched.
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), f"{name} names another origin"
        assert "@import" not in text, f"{name} loads a stylesheet from CSS"
        assert "url(" not in text, f"{name} loads a resource from CSS"


def test_the_config_cannot_close_its_script_element() -> None:
    html = webui.page_html().decode("utf-8")
    config_text = html.split('id="cassava-config" type="application/json">', 1)[1].split("</script>", 1)[0]
    assert "<" not in config_text


def test_security_headers_on_every_response() -> None:
    options = CassavaSettings()
    for response in (webui.page(options), webui.asset("app.js", options), webui.asset("nope", options)):
        csp = response.headers["content-security-policy"]
        assert "default-src 'none'" in csp
        assert "'unsafe-inline'" not in csp
        assert "'unsafe-eval'" not in csp
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"


def test_an_unknown_asset_is_a_404_naming_the_files_there_are() -> None:
    response = webui.asset("../settings.py", CassavaSettings())
    assert response.status_code == 404
    assert b"'../settings.py'" in response.body
    assert b"app.js" in response.body


@pytest.mark.parametrize("path", ["page", "asset"])
def test_turned_off_the_page_is_a_404_that_points_to_the_api(path: str) -> None:
    options = CassavaSettings(web_ui=False)
    response = webui.page(options) if path == "page" else webui.asset("app.js", options)
    assert response.status_code == 404
    assert b"CASSAVA_WEB_UI=false" in response.body
