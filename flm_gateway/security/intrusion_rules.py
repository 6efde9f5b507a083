"""Intrusion detection signatures (data only; matching lives in `addons.intrusion`).

Each rule names where it looks:
- `path`: the request path, percent-decoded repeatedly and lower-cased;
- `raw`: the request target exactly as sent (for encodings that are themselves the attack);
- `query`: the query string, decoded (`+` as space) and lower-cased;
- `headers`: each header value, lower-cased, except credentials (`authorization`,
  `x-api-key`, `cookie`, `proxy-authorization`), which are never inspected or logged;
- `user-agent`: the User-Agent value only.
Request bodies (prompts) are never inspected: a chat about SQL or file paths is
ordinary use of an LLM. Severity maps to an action via `security.intrusion.actions`.
Ids are stable: `security.intrusion.disabled_rules` refers to them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from flm_gateway.config.security import Severity

PATH = "path"
RAW = "raw"
QUERY = "query"
HEADERS = "headers"
USER_AGENT = "user-agent"


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    severity: Severity
    where: frozenset[str]
    pattern: re.Pattern[str]
    description: str


def _rule(
    id_: str, category: str, severity: Severity, where: set[str], pattern: str, description: str
) -> Rule:
    return Rule(id_, category, severity, frozenset(where), re.compile(pattern), description)


S = Severity
RULES: tuple[Rule, ...] = (
    # Path traversal
    _rule(
        "TRV-001",
        "traversal",
        S.HIGH,
        {PATH, QUERY},
        r"(?:^|[/\\=])\.\.(?:[/\\]|$)",
        "dot-dot path segment",
    ),
    _rule(
        "TRV-002",
        "traversal",
        S.HIGH,
        {RAW},
        r"(?i)%2e%2e|%2e\.|\.%2e|%252e|%c0%ae|%e0%80%ae|%u002e|%2f\.\.|\.\.%2f|\.\.%5c",
        "encoded dot-dot or slash around a dot-dot",
    ),
    _rule(
        "TRV-003",
        "traversal",
        S.CRITICAL,
        {PATH, QUERY, HEADERS},
        r"/etc/(?:passwd|shadow|group|hosts)\b|/proc/self/|/\.ssh/|\bid_rsa\b"
        r"|c:[/\\]windows|\bwin\.ini\b|\bboot\.ini\b",
        "system file name",
    ),
    _rule("TRV-004", "traversal", S.MEDIUM, {RAW}, r"(?i)%00|%2500", "encoded NUL byte"),
    # SQL injection (never in bodies)
    _rule(
        "SQL-001",
        "sqli",
        S.HIGH,
        {PATH, QUERY, HEADERS},
        r"\bunion\b[\s(/*+]+(?:all[\s(/*+]+|distinct[\s(/*+]+)?select\b",
        "UNION SELECT",
    ),
    _rule(
        "SQL-002",
        "sqli",
        S.HIGH,
        {PATH, QUERY, HEADERS},
        r"['\"`]\s*\)?\s*(?:or|and)\s+\(?\s*['\"]?[\w@]+['\"]?\s*(?:=|<|>|like\b)",
        "quote followed by a boolean tautology (' or 1=1)",
    ),
    _rule(
        "SQL-003",
        "sqli",
        S.HIGH,
        {PATH, QUERY, HEADERS},
        r"['\";)]\s*;?\s*(?:drop|delete|insert|update|alter|truncate|exec(?:ute)?)\s+"
        r"(?:table|from|into|database|\w+\s+set|xp_)",
        "stacked SQL statement",
    ),
    _rule(
        "SQL-004",
        "sqli",
        S.MEDIUM,
        {PATH, QUERY, HEADERS},
        r"\b(?:sleep|pg_sleep|benchmark)\s*\(\s*\d|\bwaitfor\s+delay\s+'",
        "timing probe",
    ),
    _rule(
        "SQL-005",
        "sqli",
        S.MEDIUM,
        {PATH, QUERY, HEADERS},
        r"\binformation_schema\b|\bsysobjects\b|\bxp_cmdshell\b|@@version\b|\bload_file\s*\(",
        "SQL catalogue or function probe",
    ),
    _rule(
        "SQL-006",
        "sqli",
        S.MEDIUM,
        {QUERY},
        r"['\"]\s*(?:--|#|/\*)",
        "quote closed then commented out",
    ),
    # Command injection
    _rule(
        "CMD-001",
        "cmdi",
        S.HIGH,
        {PATH, QUERY},
        r"(?:[;&|`]|\$\()\s*(?:cat|ls|id|whoami|uname|wget|curl|nc|ncat|bash|sh|zsh|python3?"
        r"|perl|php|powershell|cmd(?:\.exe)?|ping|nslookup|chmod|rm)\b",
        "shell command after a separator",
    ),
    _rule(
        "CMD-002",
        "cmdi",
        S.HIGH,
        {PATH, QUERY, HEADERS},
        r"\$\((?:[^)]{0,80})\)|`[^`]{1,80}`|\|\s*(?:ba|z)?sh\b",
        "shell substitution or pipe",
    ),
    _rule(
        "CMD-003",
        "cmdi",
        S.CRITICAL,
        {PATH, QUERY, HEADERS},
        r"\(\)\s*\{\s*:?\s*;?\s*\}\s*;",
        "Shellshock function definition",
    ),
    _rule(
        "CMD-004",
        "cmdi",
        S.CRITICAL,
        {PATH, QUERY, HEADERS},
        r"\$\{\s*(?:jndi|\$\{|lower:|upper:|env:|sys:|::-)",
        "Log4Shell lookup",
    ),
    # Cross-site scripting in the URL
    _rule(
        "XSS-001",
        "xss",
        S.MEDIUM,
        {PATH, QUERY},
        r"<\s*script\b|javascript\s*:|\bon(?:error|load|mouseover)\s*=|<\s*svg\b[^>]*\bon",
        "script in the URL",
    ),
    # Scanners
    _rule(
        "SCN-001",
        "scanner",
        S.HIGH,
        {USER_AGENT},
        r"sqlmap|nikto|\bnmap\b|masscan|zgrab|nuclei|dirbuster|gobuster|wpscan|acunetix"
        r"|nessus|openvas|w3af|havij|fimap|feroxbuster|\bffuf\b|wfuzz|jaeles|netsparker"
        r"|burpcollaborator|appscan|arachni|skipfish|whatweb|zmeu|morfeus",
        "scanner User-Agent",
    ),
    _rule(
        "SCN-002",
        "scanner",
        S.LOW,
        {PATH},
        r"\.(?:php\d?|asp|aspx|jsp|cgi|pl)(?:/|$)|/cgi-bin/|/xmlrpc|/\.(?:git|svn|hg|ds_store)\b"
        r"|/(?:wp-includes|wp-content|phpmyadmin|pma|myadmin|administrator|manager/html)\b",
        "path of another web stack",
    ),
)
