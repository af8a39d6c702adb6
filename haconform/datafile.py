"""Data files (topology, inventory, stage.yaml): read the YAML, validate it against a pydantic model.

Every data file is validated the same way: a model (a DataModel: unknown keys
refused) says what each key holds, and load_model turns the first thing wrong
into one HaconformError naming the file, the key (dotted, `[i]` for a list
item: `cluster.resources.vip.operations[0].interval`), what is wrong and the
fix.  The words come from the models:

  - a validator's error:  `raise invalid(what, fix)`, `at=("sub", "key")` for a key below the model,
                          or `checked(test, what, fix)` in Annotated[...];
  - a field's fix:        `key_field(fix=...)`, for any error at or below that field;
  - a field's kind:       `key_field(kind=...)`: "add `name:` (KIND)" when it is missing;
  - unknown keys:         "allowed: a, b, c", or the model's `unknown_fix`;
  - a Literal:            "use one of a, b, c".

Checks that need other data (another file, the disk, DNS, ssh) run after the
model, in plain code, and raise through `fail`: the same message.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError, PydanticUndefined

from .errors import HaconformError

TOP_LEVEL = "(top level)"
Model = TypeVar("Model", bound=BaseModel)


def fail(path, key: str, what: str, fix: str):
    """The one error of a data file: `FILE: KEY: WHAT (fix: FIX)`."""
    raise HaconformError(f"{key}: {what}", where=str(path), fix=fix)


def read_text_file(path: Path, *, missing_fix: str, option: str | None = None) -> str:
    """A data file's text; one HaconformError naming the file and the fix when it is missing, a
    directory, unreadable or not UTF-8 (option: how the user named it, e.g. `--topology`)."""
    another = f", or pass {option} another file" if option else ""
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise HaconformError("file not found", where=str(path), fix=missing_fix) from None
    except IsADirectoryError:
        raise HaconformError("is a directory, not a file", where=str(path),
                             fix=f"pass {option} a YAML file" if option else "make it a YAML file") from None
    except PermissionError:
        raise HaconformError("cannot be read (permission denied)", where=str(path),
                             fix=f"make it readable by the user running haconform{another}") from None
    except UnicodeDecodeError as exc:
        raise HaconformError(f"is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})",
                             where=str(path), fix=f"save it as UTF-8{another}") from None
    except OSError as exc:
        raise HaconformError(f"cannot be read ({exc.strerror or exc})", where=str(path),
                             fix=f"check the file and its disk{another}") from None


def read_yaml_mapping(path: Path, *, missing_fix: str, layout: str, option: str | None = None) -> dict:
    """A YAML file whose top level is a mapping; one HaconformError naming file (and line) otherwise."""
    text = read_text_file(path, missing_fix=missing_fix, option=option)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise HaconformError(f"not valid YAML ({getattr(exc, 'problem', exc)})", where=where,
                             fix="correct the YAML syntax at that line") from None
    if not isinstance(data, dict):
        fail(path, TOP_LEVEL, "must be a mapping", f"see {layout} for the layout")
    return data


class DataModel(BaseModel):
    """A mapping of a data file: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    unknown_fix: ClassVar[str | None] = None    # instead of "allowed: ..." for an unknown key


def key_field(default: Any = PydanticUndefined, *, kind: str | None = None, fix: str | None = None,
              **kwargs) -> Any:
    """A model field with the words of its errors: kind (what it holds, for "add `x:` (KIND)"), fix."""
    extra = {"fix": fix} if fix else None
    return Field(default, description=kind, json_schema_extra=extra, **kwargs)


def invalid(what: str, fix: str | None = None, *, at: tuple = ()) -> PydanticCustomError:
    """What a validator raises: what is wrong, the fix (None: the field's), the key below the model it names."""
    return PydanticCustomError("haconform", "{what}", {"what": what, "fix": fix, "at": at})


def checked(test: Callable[[Any], Any], what: str, fix: str | None = None, *, optional: bool = False):
    """A validator, for Annotated[...]: the value as is, or invalid(what, fix) when test(value) is false.

    `{!r}` in what stands for the value; optional: None passes.
    """
    def check(value):
        if not (value is None and optional) and not test(value):
            raise invalid(what.replace("{!r}", repr(value)), fix)
        return value
    return PlainValidator(check)


# Values that reach a shell command line on a host (service NAME start, chown OWNER:GROUP, chmod MODE):
# refused at load unless they match, and quoted where they are used as well.
SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9@._+-]{0,63}$")
ACCOUNT_NAME = re.compile(r"^(?:[a-z_][a-z0-9_.-]{0,31}\$?|[0-9]{1,10})$")
MODE = re.compile(r"^[0-7]{3,4}$")


def _service_name(value) -> str:
    if not (isinstance(value, str) and SERVICE_NAME.match(value)):
        raise invalid(f"{value!r} is not a service name",
                      "use the init script's name: letters, digits and . _ + - @ only, e.g. haproxy")
    return value


def _account_name(value) -> str:
    if not (isinstance(value, str) and ACCOUNT_NAME.match(value)):
        raise invalid(f"{value!r} is not a user or group name",
                      "use a name as `getent passwd` or `getent group` shows it, without spaces or quotes, e.g. www-data")
    return value


def _octal_guess(number: int) -> str:
    """What an unquoted mode read as a number was most likely written as: YAML 1.1 reads 0640 as 416."""
    as_octal = f"0{number:o}"
    return as_octal if len(as_octal) <= 4 else str(number)


def _mode(value) -> str:
    if type(value) is int:
        raise invalid(f"{value} is a YAML number, not a mode (YAML reads an unquoted 0640 as 416)",
                      f"quote it, e.g. \"{_octal_guess(value)}\"")
    if not (isinstance(value, str) and MODE.match(value)):
        raise invalid(f"{value!r} is not a mode", "write 3 or 4 octal digits, quoted, e.g. \"0640\"")
    return value


ServiceName = Annotated[str, PlainValidator(_service_name)]
AccountName = Annotated[str, PlainValidator(_account_name)]
Mode = Annotated[str, PlainValidator(_mode)]


def load_model(model_cls: type[Model], data: Any, *, path, layout: str, at: tuple = ()) -> Model:
    """model_cls validated from data; one HaconformError (file, key, what, fix) for the first problem.

    at: where data sits in the file (("cluster",) for a block validated on its own).
    Unknown keys are reported first: a misspelt key also makes its right spelling "missing".
    """
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(error["loc"])
    if error["type"] == "extra_forbidden":
        parent = loc[:-1]
        unknown = sorted(str(e["loc"][-1]) for e in errors
                         if e["type"] == "extra_forbidden" and tuple(e["loc"][:-1]) == parent)
        _, model, key = _walk(model_cls, parent)
        fix = f"see {layout}"
        if isinstance(model, type) and issubclass(model, DataModel):
            allowed = ", ".join(sorted(f.alias or name for name, f in model.model_fields.items()))
            fix = (model.unknown_fix or "allowed: {allowed}").replace("{allowed}", allowed)
        fail(path, _key(at, key), f"unknown field(s) {', '.join(unknown)}", fix)
    loc += tuple((error.get("ctx") or {}).get("at", ()))      # invalid(..., at=) names a key below
    info, annotation, key = _walk(model_cls, loc)
    name = next((str(part) for part in reversed(loc) if isinstance(part, str) and part != "[key]"), "value")
    subject = {"[key]": f"each key of `{name}`"}.get(loc[-1] if loc else None, f"`{name}`")
    if loc and isinstance(loc[-1], int):
        subject = f"each item of `{name}`"
    fail(path, _key(at, key), _what(error, name), _fix(error, name, subject, info, annotation, layout))


def _key(at: tuple, key: str) -> str:
    """The key in the file: at (where the data sits) before the key inside it."""
    return ".".join(filter(None, [*map(str, at), key])).replace(".[", "[") or TOP_LEVEL


_KINDS = {dict: "a mapping", list: "a list", str: "a string", bool: "true/false", int: "a number",
          float: "a number", type(None): "empty"}


def _kind(value) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def _what(error: dict, name: str) -> str:
    kind, value = error["type"], error.get("input")
    if kind == "haconform":
        return error["ctx"]["what"]
    if kind == "missing":
        return "missing field"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping, is {_kind(value)}"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"must be a list, is {_kind(value)}"
    if kind == "string_type":
        return f"must be a string, is {_kind(value)}"
    if kind == "literal_error":
        return f"unknown {name} {value!r}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{value!r} is not a whole number"
    if kind in ("bool_type", "bool_parsing"):
        return f"{value!r} is not true or false"
    if kind in ("too_short", "string_too_short"):
        return "must not be empty"
    if kind == "value_error":
        return str(error["ctx"]["error"])
    message = error["msg"]
    return f"{value!r}: {message[:1].lower()}{message[1:]}"


_SHAPES = {"dict_type": "a mapping", "model_type": "a mapping", "list_type": "a list", "string_type": "a string"}


def _fix(error: dict, name: str, subject: str, info: FieldInfo | None, annotation, layout: str) -> str:
    """The validator's fix, else the field's, else one said from the field's kind or type."""
    kind = info.description if info is not None else None
    extra = info.json_schema_extra if info is not None else None
    if error["type"] == "haconform" and error["ctx"]["fix"]:
        return error["ctx"]["fix"]
    if error["type"] == "missing":
        return f"add `{name}:` ({kind or f'see {layout}'})"
    if isinstance(extra, dict) and extra.get("fix"):
        return str(extra["fix"])
    if get_origin(annotation) is Literal:
        return f"use one of {', '.join(map(str, get_args(annotation)))}"
    if kind:
        return f"write `{name}:` ({kind})"
    if error["type"] in _SHAPES:
        return f"write {subject} as {_SHAPES[error['type']]} (see {layout})"
    return f"see {layout}"


def _unwrap(annotation):
    """Annotated[X, ...] -> X; X | None -> X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def _walk(model_cls, loc: tuple) -> tuple[FieldInfo | None, Any, str]:
    """Along loc: the deepest model field (its fix covers what lies below it), the type at loc, and loc
    spelt as a key: hosts.server1.role, operations[0] for a list item, `[key]` (a mapping's key) left out."""
    info, annotation, key = None, model_cls, ""
    for part in loc:
        annotation = _unwrap(annotation)
        origin = get_origin(annotation)
        if part == "[key]":
            annotation = get_args(annotation)[0] if origin is dict else None
            continue
        if isinstance(part, int) and origin is not dict:
            key += f"[{part}]"
        else:
            key += f".{part}" if key else str(part)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found = next((f for n, f in annotation.model_fields.items() if part in (n, f.alias)), None)
            info, annotation = (found, found.annotation) if found is not None else (info, None)
        elif origin in (dict, list, tuple):
            annotation = get_args(annotation)[-1 if origin is dict else 0]
        else:
            annotation = None
    return info, _unwrap(annotation), key
