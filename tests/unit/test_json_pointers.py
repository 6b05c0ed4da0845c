"""Pointers name members whose names hold ``/`` or ``~`` by RFC 6901's escapes, wherever
the project makes one: validation errors, revision changes, identity maps."""

import pytest

from nextoffer.errors import Unprocessable
from nextoffer.repository import revisions, validation
from nextoffer.service.identities import parse_identity_map


def test_a_validation_pointer_escapes_each_member_name():
    assert validation.pointer(["a/b", "c~d", 0], "/body") == "/body/a~1b/c~0d/0"
    assert validation.pointer([]) == ""


def test_a_created_instances_changes_name_members_by_escaped_pointers():
    paths = [change["path"] for change in revisions.changes(None, {"a/b": 1, "~": 2})]
    assert paths == ["/a~1b", "/~0"]


def test_a_bad_identity_map_points_at_the_escaped_namespace():
    with pytest.raises(Unprocessable) as caught:
        parse_identity_map({"ns/x~y": [{"id": ""}]}, pointer="/identityMap")
    assert caught.value.pointer == "/identityMap/ns~1x~0y/0"


def test_a_nul_in_a_body_points_at_the_escaped_member():
    body = {"xdm:name": "x", "odd/key~": "\x00"}
    assert validation.nul_at(body, prefix="/b") == "/b/odd~1key~0"
