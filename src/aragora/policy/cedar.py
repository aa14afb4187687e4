"""Workspace access rules in Cedar: the schema they are written against, their
validation, compilation and evaluation.

The request every rule sees::

    principal  Token::"<token id>"   attribute ``role`` (String); member of Role::"<role>"
    action     Action::"<action>"    one of ``aragora.tenancy.models.Action``
    resource   Workspace::"<workspace id>"
    context    task_type, priority, capability          String ("" when not given)
               agent_capabilities, required_capabilities Set<String> (empty when not given)
               payload_bytes                             Long (0 when not given)
               hour_utc                                  Long, 0-23, from the engine's clock

Every context attribute is always present (with the neutral value above), so rules
need no ``has`` guards and a rule never fails to evaluate because an attribute is
missing. Rules are validated against this schema when saved, so a misspelt attribute
or action is rejected then, not silently ignored at request time.

Evaluation: a base ``permit(principal, action, resource);`` plus every statement of
the workspace's rules, with Cedar's deny-overrides-allow semantics (any matching
``forbid`` wins). A ``forbid`` that fails to evaluate denies too (fail closed).
"""

from __future__ import annotations

import json
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any

import cedarpy

from aragora.control_plane.errors import ValidationError
from aragora.policy.models import Decision, Rule
from aragora.tenancy.models import Action, Principal

MAX_RULE_TEXT_CHARS = 10_000
BASE_POLICY = "permit(principal, action, resource);"
_BASE_ID = "base"

_STRING_ATTRIBUTES = ("task_type", "priority", "capability")
_SET_ATTRIBUTES = ("agent_capabilities", "required_capabilities")
_LONG_ATTRIBUTES = ("payload_bytes",)
REQUEST_ATTRIBUTES = _STRING_ATTRIBUTES + _SET_ATTRIBUTES + _LONG_ATTRIBUTES
"""Attributes a caller may pass to ``PolicyEngine.authorize``; ``hour_utc`` is added."""

SCHEMA_TEXT = (
    "entity Role;\n"
    "entity Token in [Role] { role: String };\n"
    "entity Workspace;\n"
    "type RequestContext = {\n"
    + "".join(f"  {name}: String,\n" for name in _STRING_ATTRIBUTES)
    + "".join(f"  {name}: Set<String>,\n" for name in _SET_ATTRIBUTES)
    + "".join(f"  {name}: Long,\n" for name in _LONG_ATTRIBUTES)
    + "  hour_utc: Long,\n};\n"
    + "action "
    + ", ".join(json.dumps(a.value) for a in Action)
    + " appliesTo { principal: [Token], resource: [Workspace], context: RequestContext };\n"
)
"""The Cedar schema rules are validated against (see the module docstring)."""

_SCHEMA = cedarpy.Schema.from_str(SCHEMA_TEXT)
_BASE_EST = json.loads(cedarpy.policies_to_json_str(BASE_POLICY))["staticPolicies"]["policy0"]
_POLICY_IN_ERROR = re.compile(r"policy `([^`]*)`")

FrozenAttributes = tuple[str, str, str, tuple[str, ...], tuple[str, ...], int]
"""Request attributes in ``REQUEST_ATTRIBUTES`` order, hashable (a cache key part)."""
_NO_ATTRIBUTES: FrozenAttributes = ("", "", "", (), (), 0)
_CONTEXT_ATTRIBUTES = frozenset((*REQUEST_ATTRIBUTES, "hour_utc"))
_CONTEXT_VAR = {"Var": "context"}


def validate_rule_text(text: object) -> str:
    """Reject text that is not valid Cedar for this schema, naming the field ``policy``.

    Runs Cedar's parser and its validator against ``SCHEMA_TEXT``, so syntax errors,
    unknown actions, unknown or mistyped attributes and templates are refused before
    anything is stored. Returns the text unchanged.
    """
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("policy", "must be non-empty Cedar policy text")
    if len(text) > MAX_RULE_TEXT_CHARS:
        raise ValidationError("policy", f"must be at most {MAX_RULE_TEXT_CHARS} characters")
    try:
        policy_set = cedarpy.PolicySet.from_str(text)
    except ValueError as exc:
        raise ValidationError("policy", f"does not parse: {exc}") from None
    if policy_set.templates():
        raise ValidationError("policy", "templates (?principal, ?resource) are not supported")
    if len(policy_set) == 0:
        raise ValidationError("policy", "holds no policy statement")
    result = cedarpy.validate_policies(text, _SCHEMA)
    if not result.validation_passed:
        messages = "; ".join(error.error for error in result.errors) or "is not valid"
        raise ValidationError("policy", messages)
    return text


def freeze_attributes(attributes: Mapping[str, object] | None) -> FrozenAttributes:
    """Check and normalise request attributes into a hashable tuple.

    ``None`` means not given. Unknown names or wrong types are a programming error of
    the caller (``ValueError``), not bad input of a user. ``priority`` is lower-cased;
    sets are sorted.
    """
    if not attributes:
        return _NO_ATTRIBUTES
    given = {name: value for name, value in attributes.items() if value is not None}
    unknown = set(given) - set(REQUEST_ATTRIBUTES)
    if unknown:
        raise ValueError(
            f"unknown policy attribute(s) {sorted(unknown)}; known: {REQUEST_ATTRIBUTES}"
        )
    strings = [_string(given, name) for name in _STRING_ATTRIBUTES]
    strings[1] = strings[1].lower()
    sets = [_string_set(given, name) for name in _SET_ATTRIBUTES]
    payload_bytes = given.get("payload_bytes", 0)
    if isinstance(payload_bytes, bool) or not isinstance(payload_bytes, int) or payload_bytes < 0:
        raise ValueError(
            f"policy attribute payload_bytes must be an int >= 0, not {payload_bytes!r}"
        )
    return (strings[0], strings[1], strings[2], sets[0], sets[1], payload_bytes)


def _string(given: Mapping[str, object], name: str) -> str:
    value = given.get(name, "")
    if not isinstance(value, str):
        raise ValueError(f"policy attribute {name} must be a str, not {value!r}")
    return str(value)


def _string_set(given: Mapping[str, object], name: str) -> tuple[str, ...]:
    value = given.get(name, ())
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise ValueError(f"policy attribute {name} must be a collection of str, not {value!r}")
    items = list(value)
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"policy attribute {name} must hold only str, not {value!r}")
    return tuple(sorted(set(items)))


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """The rules of one workspace at one version, parsed once for many evaluations.

    ``policy_set`` is ``None`` when the workspace has no rules (nothing to evaluate);
    ``broken`` names a stored rule that no longer compiles, which denies everything.
    ``reads`` holds the context attributes some rule reads and ``names_tokens`` whether
    a rule names a token: only those can change a decision, so only those go into the
    decision cache key (a varying ``payload_bytes`` does not defeat the cache unless a
    rule looks at it).
    """

    version: int
    policy_set: cedarpy.PolicySet | None
    rule_of: Mapping[str, str]
    forbids: frozenset[str]
    broken: str | None = None
    reads: frozenset[str] = frozenset()
    names_tokens: bool = False
    _mask: tuple[bool, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_mask", tuple(n in self.reads for n in REQUEST_ATTRIBUTES))

    def cache_key(
        self, principal: Principal, action: Action, attrs: FrozenAttributes, hour_utc: int
    ) -> Hashable:
        """What a decision under these rules can depend on, and nothing more."""
        return (
            principal.workspace_id,
            self.version,
            principal.token_id if self.names_tokens else None,
            principal.role,
            action,
            tuple(compress(attrs, self._mask)),
            hour_utc if "hour_utc" in self.reads else None,
        )


def _references(est: Any) -> tuple[set[str], bool, bool]:
    """Context attributes a policy reads, whether it uses the context as a whole, and
    whether it names a ``Token`` (in its scope, a literal or an ``is`` test)."""
    reads: set[str] = set()
    whole = tokens = False

    def walk(node: Any) -> None:
        nonlocal whole, tokens
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            return
        for op in (".", "has"):
            inner = node.get(op)
            if isinstance(inner, dict) and inner.get("left") == _CONTEXT_VAR:
                reads.add(str(inner.get("attr")))
                return
        if node == _CONTEXT_VAR:
            whole = True
            return
        if node.get("type") == "Token" or node.get("entity_type") == "Token":
            tokens = True
        for value in node.values():
            walk(value)

    walk(est)
    return reads, whole, tokens


def compile_rules(version: int, rules: Sequence[Rule]) -> CompiledRules:
    """Join the base permit and every statement of ``rules`` into one Cedar policy set.

    Each statement gets the Cedar id ``<rule id>#<n>`` so a decision can name the rule.
    """
    if not rules:
        return CompiledRules(version, None, {}, frozenset())
    statements: dict[str, Any] = {_BASE_ID: _BASE_EST}
    rule_of: dict[str, str] = {}
    forbids: set[str] = set()
    reads: set[str] = set()
    names_tokens = False
    for rule in rules:
        try:
            parsed = json.loads(cedarpy.policies_to_json_str(rule.text))
        except ValueError as exc:
            return CompiledRules(version, None, {}, frozenset(), f"{rule.rule_id}: {exc}")
        for n, est in enumerate(parsed["staticPolicies"].values()):
            policy_id = f"{rule.rule_id}#{n}"
            statements[policy_id] = est
            rule_of[policy_id] = rule.rule_id
            if est.get("effect") == "forbid":
                forbids.add(policy_id)
            attributes, whole, tokens = _references(est)
            reads |= _CONTEXT_ATTRIBUTES if whole else attributes
            names_tokens = names_tokens or tokens
    document = {"staticPolicies": statements, "templates": {}, "templateLinks": []}
    policy_set = cedarpy.PolicySet.from_json_str(json.dumps(document))
    return CompiledRules(
        version, policy_set, rule_of, frozenset(forbids), None, frozenset(reads), names_tokens
    )


def evaluate(
    compiled: CompiledRules,
    principal: Principal,
    action: Action,
    attrs: FrozenAttributes,
    hour_utc: int,
) -> Decision:
    """Evaluate the workspace rules for one request the role grant already allows."""
    role = principal.role.value
    if compiled.broken is not None:
        return Decision(False, f"denied: stored rule {compiled.broken} no longer compiles")
    if compiled.policy_set is None:
        return Decision(True, f"role {role} grants {action.value}; the workspace has no rules")
    token = {"type": "Token", "id": principal.token_id}
    request = {
        "principal": token,
        "action": {"type": "Action", "id": action.value},
        "resource": {"type": "Workspace", "id": principal.workspace_id},
        "context": {
            "task_type": attrs[0],
            "priority": attrs[1],
            "capability": attrs[2],
            "agent_capabilities": list(attrs[3]),
            "required_capabilities": list(attrs[4]),
            "payload_bytes": attrs[5],
            "hour_utc": hour_utc,
        },
    }
    entities: list[dict[str, Any]] = [
        {"uid": token, "attrs": {"role": role}, "parents": [{"type": "Role", "id": role}]},
        {"uid": {"type": "Role", "id": role}, "attrs": {}, "parents": []},
        {"uid": {"type": "Workspace", "id": principal.workspace_id}, "attrs": {}, "parents": []},
    ]
    result = cedarpy.is_authorized(request, compiled.policy_set, entities)
    failed = [
        compiled.rule_of[m.group(1)]
        for error in result.diagnostics.errors
        if (m := _POLICY_IN_ERROR.search(error)) and m.group(1) in compiled.forbids
    ]
    if failed:
        rule_ids = tuple(dict.fromkeys(failed))
        return Decision(False, f"denied: rule {rule_ids[0]} failed to evaluate", rule_ids)
    if result.allowed:
        return Decision(True, f"role {role} grants {action.value}; no rule forbids it")
    rule_ids = tuple(
        dict.fromkeys(
            compiled.rule_of[p] for p in result.diagnostics.reasons if p in compiled.rule_of
        )
    )
    if not rule_ids:  # cannot happen with the base permit, but never allow by accident
        return Decision(False, "denied: no policy permitted the request")
    return Decision(False, f"denied by rule {', '.join(rule_ids)}", rule_ids)
