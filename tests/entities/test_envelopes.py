from __future__ import annotations

import json

import pytest

from storylab.entities import Envelope


def test_envelope_round_trips_through_json():
    env = Envelope("VALUE", "id-1", "Image", "image-1", value={"k": [1, 2]}, sub_type="return")
    back = Envelope.from_json(json.loads(json.dumps(env.to_json())))
    assert back == env
    assert set(env.to_json()) == {
        "type", "entity_id", "entity_type", "entity_name", "status",
        "message", "value", "sub_type", "error", "at",
    }  # fmt: skip


def test_envelope_is_frozen_and_stamped():
    env = Envelope("STATUS", "i", "T", "n", status="RUNNING")
    assert env.at > 0
    with pytest.raises(AttributeError):
        env.status = "FAILED"


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"type": "NOPE", "entity_id": "i", "entity_type": "T", "entity_name": "n"},
         "field 'type' must be one of ERROR, INTERNAL_UPDATE, STATUS, VALUE"),
        ({"type": "STATUS", "entity_type": "T"}, "missing field.*entity_id, entity_name"),
    ],
)  # fmt: skip
def test_from_json_names_the_bad_field(data, match):
    with pytest.raises(ValueError, match=match):
        Envelope.from_json(data)
