"""docs/api.md documents exactly the public API, with the signatures the code has today."""

from __future__ import annotations

import pytest
from docs_tools import API_MEMBERS_REQUIRED, ROOT, api_entries, api_signature, public_members

import tars.mqtt

API_DOC = ROOT / "docs" / "api.md"
ENTRIES = api_entries(API_DOC.read_text())


def test_every_public_name_is_documented() -> None:
    missing = sorted(set(tars.mqtt.__all__) - set(ENTRIES))
    assert not missing, f"docs/api.md lacks: {missing}"


@pytest.mark.parametrize("owner", API_MEMBERS_REQUIRED)
def test_every_member_of_the_main_classes_is_documented(owner: str) -> None:
    members = public_members(getattr(tars.mqtt, owner))
    missing = [m for m in members if f"{owner}.{m}" not in ENTRIES]
    assert not missing, f"docs/api.md lacks {owner}.{missing}"


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_each_documented_name_exists_with_the_documented_signature(name: str) -> None:
    try:
        actual = api_signature(name)
    except AttributeError as exc:
        pytest.fail(f"docs/api.md documents {name}, which no longer exists ({exc})")
    assert ENTRIES[name] == actual


def test_each_entry_has_a_meaning() -> None:
    """Heading, signature, then a sentence (not straight into the next heading)."""
    lines = [line for line in API_DOC.read_text().splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if line.startswith(("### `", "#### `")):
            meaning = lines[index + 2] if index + 2 < len(lines) else "#"
            assert not meaning.startswith("#"), f"{line} has no meaning"


def test_the_checker_catches_a_stale_or_missing_entry() -> None:
    """The three checks above can fail: a renamed method, a removed name, a changed default."""
    stale = api_entries("### `MQTTClient`\n\n`x`\n\n#### `MQTTClient.publish_evnt`\n\n`y`\n")
    with pytest.raises(AttributeError):
        api_signature("MQTTClient.publish_evnt")
    with pytest.raises(AttributeError):
        api_signature("NoSuchName")
    assert stale["MQTTClient"] != api_signature("MQTTClient")
