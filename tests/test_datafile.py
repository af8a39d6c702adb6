"""datafile.load_model: a pydantic error becomes one HaconformError naming the file, the key, what and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar, Literal

import pytest
from pydantic import PlainValidator, model_validator

from haconform.datafile import DataModel, invalid, key_field, load_model, read_yaml_mapping
from haconform.errors import HaconformError

PATH = Path("/etc/haconform/box.yaml")


def _interval(value) -> str:
    if not str(value).endswith("s"):
        raise invalid(f"{value!r} is not an interval", "write e.g. 30s")
    return str(value)


class Op(DataModel):
    name: str = key_field(kind="the operation, e.g. monitor")
    interval: Annotated[str, PlainValidator(_interval)] = "30s"


class Box(DataModel):
    role: Literal["front", "back"] = "front"
    size: int = key_field(1, fix="write the size in bytes, e.g. `size: 128`")
    ops: list[Op] = []
    named: dict[str, Op] = {}


class Pair(DataModel):
    unknown_fix: ClassVar[str] = "write `{low: N, high: N}` ({allowed})"
    low: int = 0
    high: int = 0

    @model_validator(mode="after")
    def _ordered(self):
        if self.low > self.high:
            raise invalid(f"{self.low} is above high {self.high}", "swap them", at=("low",))
        return self


def refused(model, data, **kwargs) -> HaconformError:
    with pytest.raises(HaconformError) as caught:
        load_model(model, data, path=PATH, layout="docs/box.md", **kwargs)
    error = caught.value
    assert error.where == str(PATH) and error.fix, error
    assert str(error) == f"{PATH}: {error.what} (fix: {error.fix})"
    return error


def test_a_valid_mapping_is_the_model():
    box = load_model(Box, {"size": 3, "ops": [{"name": "monitor"}]}, path=PATH, layout="docs/box.md")
    assert box.size == 3 and box.ops[0].interval == "30s"


def test_unknown_keys_name_the_mapping_and_what_is_allowed():
    error = refused(Box, {"colour": "red", "shape": 1})
    assert error.what == "(top level): unknown field(s) colour, shape"
    assert error.fix == "allowed: named, ops, role, size"
    error = refused(Box, {"ops": [{"name": "monitor"}, {"name": "start", "timeout": "20s"}]})
    assert error.what == "ops[1]: unknown field(s) timeout" and error.fix == "allowed: interval, name"


def test_a_misspelt_key_is_reported_rather_than_its_missing_spelling():
    error = refused(Box, {"ops": [{"nmae": "monitor"}]})
    assert error.what == "ops[0]: unknown field(s) nmae"


def test_a_model_may_word_its_unknown_key_fix():
    assert refused(Pair, {"lo": 1}).fix == "write `{low: N, high: N}` (high, low)"


def test_wrong_type_takes_the_fields_fix():
    error = refused(Box, {"size": "big"})
    assert error.what == "size: 'big' is not a whole number"
    assert error.fix == "write the size in bytes, e.g. `size: 128`"
    error = refused(Box, {"ops": {"name": "monitor"}})
    assert error.what == "ops: must be a list, is a mapping" and "ops" in error.fix


def test_missing_field_says_what_to_add():
    error = refused(Box, {"named": {"vip": {"interval": "30s"}}})
    assert error.what == "named.vip.name: missing field"
    assert error.fix == "add `name:` (the operation, e.g. monitor)"


def test_a_validators_fix_and_a_list_index_in_the_key():
    error = refused(Box, {"ops": [{"name": "monitor"}, {"name": "start", "interval": "soon"}]})
    assert error.what == "ops[1].interval: 'soon' is not an interval"
    assert error.fix == "write e.g. 30s"


def test_a_literal_lists_its_values():
    error = refused(Box, {"role": "middle"})
    assert error.what == "role: unknown role 'middle'" and error.fix == "use one of front, back"


def test_a_model_validator_names_the_key_below_it_and_at_places_the_block():
    error = refused(Pair, {"low": 5, "high": 1}, at=("cluster", "pair"))
    assert error.what == "cluster.pair.low: 5 is above high 1" and error.fix == "swap them"


def test_a_numeric_mapping_key_is_spelt_as_a_key_not_an_index():
    error = refused(Box, {"named": {9: {"name": "x"}}})
    assert error.what == "named.9: must be a string, is a number"
    assert error.fix == "write each key of `named` as a string (see docs/box.md)"


def test_read_yaml_mapping_refuses_a_list(tmp_path):
    path = tmp_path / "box.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(HaconformError) as caught:
        read_yaml_mapping(path, missing_fix="create it", layout="docs/box.md")
    assert caught.value.where == str(path) and caught.value.what == "(top level): must be a mapping"
    assert "docs/box.md" in caught.value.fix
