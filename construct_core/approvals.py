"""Which tool calls wait for a person: the CONSTRUCT_TOOL_APPROVAL rules, parsed and matched.

Plain Python, no Django: settings.py parses the variable with `rules_parse`
(a malformed value stops start-up, naming it), and the turn engine asks
`policy_for` before each tool call.

    CONSTRUCT_TOOL_APPROVAL="shell=ask,file_*=ask,memory_store=auto,ops__*=deny,*=auto"

Rules are `PATTERN=POLICY`, comma-separated, and the first whose pattern
matches the tool's name wins. A pattern is a tool name or a shell-style glob
(`*`, `?`, `[abc]`), matched case-sensitively; a name no rule matches is `auto`.
"""

import hashlib
import json
import re
from fnmatch import fnmatchcase

AUTO = "auto"
ASK = "ask"
DENY = "deny"
POLICIES = (AUTO, ASK, DENY)

# What a person may answer, and what the timeout answers for them.
APPROVE = "approve"
ALWAYS = "always"
TIMEOUT = "timeout"
PERSON_DECISIONS = (APPROVE, DENY, ALWAYS)
DECISIONS = (APPROVE, DENY, ALWAYS, TIMEOUT)

DEFAULT_RULES = "*=auto"
# Tool names are letters, digits and _ . - (MCP tools are `server__tool`): a
# pattern adds the glob characters and nothing else.
_PATTERN = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]{1,200}$")

Rules = tuple[tuple[str, str], ...]


class BadRules(ValueError):
    """CONSTRUCT_TOOL_APPROVAL is not a list of PATTERN=POLICY rules."""


def rules_parse(text: str | None) -> Rules:
    """The rules of a CONSTRUCT_TOOL_APPROVAL value, in order; raises BadRules saying what is wrong."""
    if text is None or not text.strip():
        text = DEFAULT_RULES
    rules = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise BadRules("an empty rule (two commas in a row, or a trailing comma)")
        pattern, sep, policy = item.partition("=")
        pattern, policy = pattern.strip(), policy.strip().lower()
        if not sep:
            raise BadRules(f"{item!r} is not PATTERN=POLICY")
        if not _PATTERN.match(pattern):
            raise BadRules(f"{pattern!r} is not a tool name or a glob over tool names")
        if policy not in POLICIES:
            raise BadRules(f"the policy of {pattern!r} must be auto, ask or deny, not {policy!r}")
        rules.append((pattern, policy))
    return tuple(rules)


def policy_for(rules: Rules, tool_name: str) -> str:
    """The policy of the first rule whose pattern matches `tool_name`; `auto` when none does."""
    for pattern, policy in rules:
        if fnmatchcase(tool_name, pattern):
            return policy
    return AUTO


def asks_anyone(rules: Rules) -> bool:
    """Whether some tool call may wait for a person under these rules."""
    return any(policy == ASK for _pattern, policy in rules)


def args_digest(args) -> str:
    """sha256 (hex) of the arguments' canonical JSON: what the audit trail keeps of them."""
    text = json.dumps(args, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def json_storable(value) -> bool:
    """Whether every database's JSON column keeps `value` as it is.

    Python's json reads NaN and Infinity, NUL and lone surrogates ("\\ud800"),
    all of which PostgreSQL's jsonb refuses.
    """
    try:
        json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (ValueError, TypeError, UnicodeEncodeError, RecursionError):
        return False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def args_for_storage(args):
    """A tool call's arguments as a JSON column keeps them: as they are, or else as ASCII JSON text."""
    if json_storable(args):
        return args
    try:
        return json.dumps(args, ensure_ascii=True, default=str)
    except (ValueError, RecursionError):
        return "[arguments that cannot be stored]"
