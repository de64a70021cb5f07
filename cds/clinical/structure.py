"""Structure checks: is a resource valid FHIR R4 at all? (fhir.resources R4B, identical to R4 for these types.)

Observations are checked only when they carry a code the bindings read as a measurement, and a chart's other
observations are classified for red flags without it. Every Condition, Procedure and medicine is checked.

A resource already seen with exactly this content gets its verdict back. Otherwise: fhir.resources costs about
0.2 ms an Observation, nearly all of it in its complex elements (code, bodySite,
value, subject: eleven models each with three Python validators), and those elements repeat: every
patient's hip-flexion test carries the same code, every reading of one patient the same subject. So each
complex element is validated once per distinct content, by its own fhir.resources model, and the resource
is then validated by its model with those already-valid elements in place (pydantic takes a model instance
as it is), which still runs every rule the resource's own level has: required elements, choice types, null
list items, unknown elements, primitive formats. Any failure, at any level, is judged again by one whole
validation of the resource, so an invalid resource is reported exactly as fhir.resources reports it.

Two of those rules run in a cheaper form (`_quick_model`): fhir_core's check for null items in lists of
complex elements walks every field of the model, asking of each whether it is a list and a primitive, and its
choice-type check looks its groups up in the model's fields, on every validation (together about half of an
Observation's resource-level validation). The same questions are answered once per model, with fhir_core's
own predicates and groups; every other validator of the model runs unchanged.
"""

from __future__ import annotations

import hashlib
import threading
import typing
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel
from fhir_core.utils import is_list_type, is_primitive_type
from pydantic import ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import to_json

from cds.clinical.fhirvalues import CodesOf
from cds.content.terminology import Terminology
from cds.errors import HipflexError

Verdict = tuple[tuple[str, str], ...]
ELEMENT_ENTRIES = 4096
ELEMENT_MAX_CHARS = 2_000  # larger elements are validated in place, never kept
_INVALID = object()


class _Invalid(HipflexError):
    """An element failed its own model: the resource is judged whole, for fhir.resources' own messages."""


def content(value: Any) -> bytes:
    """Parsed JSON written out again, exactly: every key in order, every value with its JSON type (1, 1.0 and
    true apart; NaN and Infinity as themselves, not as null), so two values have one text only if they are the
    same JSON. pydantic-core writes it in a third of the time `repr` takes, and what reaches the structure check
    is always parsed JSON (`cds.jsonlimits.parse_json`), never other Python objects (a tuple or a date would
    read as a list or a string)."""
    return to_json(value, inf_nan_mode="constants")


class ContentCache:
    """Values by full content (a digest of it, or the content's text itself), least recently used out, at most
    `entries` of them; thread-safe."""

    def __init__(self, entries: int) -> None:
        self.entries = entries
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any:
        """Lock-free: a lookup is one step under the GIL, and a key another thread has just evicted is simply no
        longer refreshed (a lock here cost more than the lookup, dozens of times a decision)."""
        found = self._items.get(key)
        if found is not None:
            try:  # noqa: SIM105 -- contextlib.suppress costs more than the lookup
                self._items.move_to_end(key)
            except KeyError:
                pass
        return found

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.entries:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class ElementCache:
    """Validated complex elements by (model, exact content).

    The key is the element's full content (`content`: every key, value and type, in order), so a changed
    element, or one that differs only in key order, is a different key and is validated afresh. The text is
    the key itself, not a digest of it: a dict lookup hashes it faster than SHA-256 would (about 5 µs less an
    Observation). It holds at most ELEMENT_ENTRIES small models and their texts (at most ELEMENT_MAX_CHARS
    each), a few MB, whatever the traffic.
    """

    def __init__(self, entries: int = ELEMENT_ENTRIES) -> None:
        self._models = ContentCache(entries)

    def model(self, klass: type[FHIRAbstractModel], value: dict[str, Any]) -> object:
        """The element as a validated model, or the dict itself when it is too large to keep (validated in
        place by the resource's model); raises _Invalid when fhir.resources rejects it."""
        text = content(value)
        if len(text) > ELEMENT_MAX_CHARS:
            return value
        key = (klass, text)
        found = self._models.get(key)
        if found is None:
            try:
                found = klass.model_validate(value)
            except ValidationError:
                found = _INVALID
            self._models.put(key, found)
        if found is _INVALID:
            raise _Invalid
        return found


_elements = ElementCache()
RESOURCE_ENTRIES = 4096
RESOURCE_MAX_CHARS = 64_000  # a larger resource is validated every time (its elements may still be cached)
RESOURCE_TEXT_KEY_CHARS = 2_000  # up to this, the content's text is the key (as for elements); above, its digest
_verdicts = ContentCache(RESOURCE_ENTRIES)  # by whole content, like the elements: verdicts and at most 8 MB of keys
_fields: dict[type[FHIRAbstractModel], dict[str, tuple[type[FHIRAbstractModel], bool]]] = {}
_quick: dict[type[FHIRAbstractModel], type[FHIRAbstractModel]] = {}


def structure_errors(resource: dict[str, Any]) -> Verdict:
    """fhir.resources' verdict on one resource, as (element path, message) pairs (at most three); a resource
    seen before with exactly this content (the hooks of one visit resend the chart) is not validated again."""
    text = content(resource)
    key = text if len(text) <= RESOURCE_TEXT_KEY_CHARS else \
        hashlib.sha256(text).digest() if len(text) <= RESOURCE_MAX_CHARS else None
    known: Verdict | None = _verdicts.get(key) if key is not None else None
    if known is not None:
        return known
    model = get_fhir_model_class(resource["resourceType"])
    try:
        # the model's own __init__ (fhir_core defines one): `model_validate` calls it too, from one more layer
        _quick_model(model)(**_with_valid_elements(model, resource))
        verdict: Verdict = ()
    except (_Invalid, ValidationError):
        verdict = full_check(resource)
    if key is not None:
        _verdicts.put(key, verdict)
    return verdict


def _with_valid_elements(model: type[FHIRAbstractModel], resource: dict[str, Any]) -> dict[str, Any]:
    """A shallow copy of the resource whose complex elements are validated models; anything else (a primitive,
    a null, a wrong type) is left for the resource's model to judge."""
    fields = _fields.get(model)
    if fields is None:
        fields = _fields[model] = _complex_fields(model)
    shell = dict(resource)
    for key, value in resource.items():
        found = fields.get(key)
        if found is None:
            continue
        klass, many = found
        if many and isinstance(value, list):
            shell[key] = [_elements.model(klass, v) if isinstance(v, dict) else v for v in value]
        elif not many and isinstance(value, dict):
            shell[key] = _elements.model(klass, value)
    return shell


def _quick_model(model: type[FHIRAbstractModel]) -> type[FHIRAbstractModel]:
    """The model with two of fhir_core's checks run on what they read worked out once per model.

    The null-item check asks of every field, on every validation, whether it is a list of complex elements (not
    primitives, not the `__ext` siblings of primitive lists, whose nulls are placeholders), then whether it holds
    a null; here the first question is answered when the model is first used, by fhir_core's own predicates, and
    the same key is read (the alias if the data has it, else the field's name). The choice-type check (one of
    `value[x]`'s types at most, one at least where required) looks up the same groups and flags in the model's
    fields on every validation; here once. The validator keeps fhir_core's name, so pydantic replaces the
    inherited one rather than running both. They only ever accept or refuse: a refusal is judged again by the
    original model (`full_check`), for fhir.resources' own message."""
    found = _quick.get(model)
    if found is None:
        found = _quick[model] = type(model.__name__, (model,), {
            "__module__": __name__, "reject_null_complex_elements": _null_item_check(model),
            "_validate_one_of_many": _choice_check(model)})
    return found


def _null_item_check(model: type[FHIRAbstractModel]) -> Any:
    lists = {}
    for name, field in model.model_fields.items():
        if is_list_type(field) and not is_primitive_type(field) and not name.endswith("__ext"):
            lists[name] = (field.alias, name)
            if field.alias:
                lists[field.alias] = (field.alias, name)

    def reject_null_complex_elements(cls: type[FHIRAbstractModel], data: Any) -> Any:  # noqa: ARG001
        if isinstance(data, dict):
            for key, value in data.items():
                names = lists.get(key)
                if names is None or not isinstance(value, list):
                    continue
                alias, name = names
                if key != (alias if alias and alias in data else name):
                    continue  # a field given under both names: fhir_core reads the alias only
                if any(item is None for item in value):
                    raise ValueError(f"None is not allowed as an element of {key}")
        return data

    return model_validator(mode="before")(reject_null_complex_elements)  # `cls` first: a classmethod


def _choice_check(model: type[FHIRAbstractModel]) -> Any:
    groups: list[tuple[list[str], bool]] = []
    found = False

    def _validate_one_of_many(self: FHIRAbstractModel) -> None:
        nonlocal found
        if not found:  # the model's groups, from its first instance (fhir_core asks an instance for them)
            groups[:] = [(fields, model.model_fields[fields[0]].json_schema_extra["one_of_many_required"] is True)  # type: ignore[index]
                         for fields in self.get_one_of_many_fields().values()]  # one assignment: threads may race
            found = True
        for fields, required in groups:
            given = 0
            for field in fields:
                if getattr(self, field, None) is not None:
                    given += 1
            if given > 1:
                raise ValueError(f"Any of one field value is expected from this list {fields}, but got multiple!")
            if required and not given:
                raise ValueError(f"Expect any of field value from this list {fields}.")

    return _validate_one_of_many


def _complex_fields(model: type[FHIRAbstractModel]) -> dict[str, tuple[type[FHIRAbstractModel], bool]]:
    """JSON name -> (element model, is a list) for each complex element of a model; contained resources are
    left out (their model depends on their own resourceType)."""
    out = {}
    for name, field in model.model_fields.items():
        found = _element_model(field)
        if found is not None:
            out[field.alias or name] = found
    return out


def _element_model(field: FieldInfo) -> tuple[type[FHIRAbstractModel], bool] | None:
    annotation: Any = field.annotation
    many = False
    while not hasattr(annotation, "get_model_klass"):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) != 1:
            return None
        many = many or typing.get_origin(annotation) is list
        annotation = args[0]
    klass: type[FHIRAbstractModel] = annotation.get_model_klass()
    if klass.get_resource_type() in ("Resource", "DomainResource"):
        return None
    return klass, many


def full_check(resource: dict[str, Any]) -> Verdict:
    """One whole fhir.resources validation: the reference verdict, and the messages of every invalid one."""
    rtype = resource["resourceType"]
    try:
        get_fhir_model_class(rtype).model_validate(resource)
    except ValidationError as exc:
        return tuple((".".join(str(p) for p in (rtype, *e["loc"]) if not str(p).startswith("function")), e["msg"])
                     for e in exc.errors()[:3])
    return ()


def may_be_used(resource: dict[str, Any], t: Terminology, codes_of: CodesOf) -> bool:
    """Whether a resource carries a code the rules read (only those are worth a structure check)."""
    rtype = resource["resourceType"]
    if rtype == "Observation":
        codes = codes_of(resource)
        return not codes or not (t.observation_by_code.keys().isdisjoint(codes)
                                 and t.unsupported_by_code.keys().isdisjoint(codes))
    if rtype == "ServiceRequest":
        return bool(set(codes_of(resource)) & t.physiotherapy_codes)
    return True
