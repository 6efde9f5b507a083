"""Intrusion detection signatures, and their one-pass matcher (the policy: `addons.intrusion`).

Each rule names the inputs it reads (`where`), chosen by where its attack works:
- `path`: the request path, percent-decoded repeatedly (`security.paths`);
- `raw`: the request target exactly as sent (for encodings that are themselves the attack);
- `query`: the query string, decoded (`+` as space);
- `headers`: every header value except credentials (`authorization`, `x-api-key`,
  `cookie`, `proxy-authorization`), which are never inspected or logged;
- `user-agent`: the User-Agent value only.
Headers get only the rules whose attack works through a header: Shellshock (CGI
turns headers into environment variables), Log4Shell (Java logs them) and scanner
User-Agents. SQL, shell and script syntax in other headers reaches no interpreter
here (engines do not read `Referer` or custom headers), and legitimate values
carry it: a `Referer` of a search for "union select", Markdown backticks, `$(`.
Request bodies (prompts) are never inspected: a chat about SQL or file paths is
ordinary use of an LLM. Severity maps to an action via `security.intrusion.actions`.
Ids are stable: `security.intrusion.disabled_rules` refers to them.

Patterns are RE2 syntax (`security.linear_re`: linear time, case-insensitive,
bytes as Latin-1, `^`/`$` per line) and are matched against bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from flm_gateway.core.severity import Severity
from flm_gateway.security.linear_re import LinearPattern

PATH = "path"
RAW = "raw"
QUERY = "query"
HEADERS = "headers"
USER_AGENT = "user-agent"
KINDS = (RAW, PATH, QUERY, HEADERS, USER_AGENT)

# One unit of the spacing SQL accepts between keywords: whitespace (with \v), an
# opening parenthesis, `+` (a space in URLs), a comment, MySQL's executable comment
# opener `/*!50000`, or a line comment up to its newline.
_SQL_GAP = r"(?:[\s\x0b(+]|/\*[^*]*\*+(?:[^/*][^*]*\*+)*/|/\*!\d*|--[^\n]*\n|#[^\n]*\n)"
_QUOTE = r"['\"`]"
# What a shell reads as spacing before a command word: blanks, or $IFS.
_SHELL_SPACE = r"(?:[\s\x0b]|\$\{IFS\}|\$IFS\b)*"
# A shell command word, optionally with its directory (`/usr/bin/id`, `./x/sh`).
_COMMAND = (
    r"/?(?:[\w.-]+/)*(?:cat|ls|id|whoami|uname|wget|curl|nc|ncat|netcat|socat|telnet"
    r"|bash|sh|zsh|dash|ksh|csh|busybox|python[23]?|perl|php|ruby|node|powershell|pwsh"
    r"|cmd(?:\.exe)?|ping|nslookup|dig|chmod|chown|rm|tftp|base64|printenv|ifconfig)\b"
)


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    severity: Severity
    where: frozenset[str]
    pattern: str
    """RE2 syntax, see `security.linear_re`."""
    description: str


def _rule(
    id_: str, category: str, severity: Severity, where: set[str], pattern: str, description: str
) -> Rule:
    return Rule(id_, category, severity, frozenset(where), pattern, description)


S = Severity
RULES: tuple[Rule, ...] = (
    # Path traversal
    _rule(
        "TRV-001",
        "traversal",
        S.HIGH,
        {PATH, QUERY},
        r"(?:^|[/\\=&;])\.\.(?:[/\\;]|$)",
        "dot-dot path segment",
    ),
    _rule(
        "TRV-002",
        "traversal",
        S.HIGH,
        {RAW},
        r"%2e%2e|%2e\.|\.%2e|%25(?:25)*2e|%c0%ae|%e0%80%ae|%c0%2e|%c0%af|%c1%9c|%u002e|%uff0e"
        r"|%u2215|%u2216|%2f\.\.|\.\.%2f|\.\.%5c|%5c\.\.",
        "encoded dot-dot, or an encoded slash around a dot-dot",
    ),
    _rule(
        "TRV-003",
        "traversal",
        S.CRITICAL,
        {PATH, QUERY},
        r"/etc/(?:passwd|shadow|group|hosts|issue|crontab)\b|/proc/(?:self|\d+)/|/\.ssh/"
        r"|\bid_(?:rsa|dsa|ecdsa|ed25519)\b|\bc:[/\\]+windows\b|\b(?:win|boot|system)\.ini\b"
        r"|\bfile:/",
        "system file name",
    ),
    _rule("TRV-004", "traversal", S.MEDIUM, {RAW}, r"%00|%2500|%u0000", "encoded NUL byte"),
    # SQL injection: path and query only (never bodies, never headers)
    _rule(
        "SQL-001",
        "sqli",
        S.HIGH,
        {PATH, QUERY},
        rf"union{_SQL_GAP}+(?:(?:all|distinct){_SQL_GAP}+)?select\b",
        "UNION SELECT",
    ),
    _rule(
        "SQL-002",
        "sqli",
        S.HIGH,
        {PATH, QUERY},
        rf"{_QUOTE}{_SQL_GAP}*\)*{_SQL_GAP}*(?:(?:or|and|xor)\b|\|\||&&){_SQL_GAP}*"
        rf"(?:{_QUOTE}?[\w@.$-]*{_QUOTE}?{_SQL_GAP}*(?:[=<>!~]|(?:not{_SQL_GAP}+)?"
        rf"(?:like|is|in|between|regexp|rlike|sounds){_SQL_GAP})|(?:true|false|null|\d+)\b)",
        "quote followed by a boolean tautology (' or 1=1)",
    ),
    _rule(
        "SQL-003",
        "sqli",
        S.HIGH,
        {PATH, QUERY},
        rf";{_SQL_GAP}*(?:(?:drop|alter|truncate|create|rename){_SQL_GAP}+"
        rf"(?:table|database|schema|user|view|index|function|procedure|trigger)\b"
        rf"|delete{_SQL_GAP}+from\b|insert{_SQL_GAP}+into\b|update{_SQL_GAP}+\S+{_SQL_GAP}+set\b"
        rf"|exec(?:ute)?{_SQL_GAP}*(?:xp_|sp_|master\.|\(|@)|shutdown\b|declare{_SQL_GAP}+@)",
        "stacked SQL statement",
    ),
    _rule(
        "SQL-004",
        "sqli",
        S.MEDIUM,
        {PATH, QUERY},
        rf"\b(?:pg_)?sleep{_SQL_GAP}*\(|\bbenchmark{_SQL_GAP}*\(|\bwaitfor{_SQL_GAP}+(?:delay|time)\b"
        rf"|\bdbms_(?:pipe\.receive_message|lock\.sleep)\b|\brandomblob{_SQL_GAP}*\(",
        "timing probe",
    ),
    _rule(
        "SQL-005",
        "sqli",
        S.MEDIUM,
        {PATH, QUERY},
        rf"\binformation_schema\b|\bsys(?:objects|columns|users)\b|\bsys\.(?:objects|tables)\b"
        rf"|\bxp_cmdshell\b|\bsp_executesql\b|@@(?:version|datadir|hostname|servername)\b"
        rf"|\bload_file{_SQL_GAP}*\(|\binto{_SQL_GAP}+(?:out|dump)file\b"
        rf"|\bpg_(?:catalog|shadow|user|read_file|ls_dir)\b|\bsqlite_master\b|\bmysql\.user\b"
        rf"|\butl_(?:http|inaddr)\b|\bversion{_SQL_GAP}*\({_SQL_GAP}*\)",
        "SQL catalogue or function probe",
    ),
    _rule(
        "SQL-006",
        "sqli",
        S.MEDIUM,
        {QUERY},
        r"['\"][\s\x0b)]*(?:--|#|/\*)",
        "quote closed then commented out",
    ),
    # Command injection
    _rule(
        "CMD-001",
        "cmdi",
        S.HIGH,
        {PATH, QUERY},
        rf"(?:[;|`\n\r]|&&|\$\(){_SHELL_SPACE}{_COMMAND}",
        "shell command after a separator (`;`, `|`, `&&`, a newline, a substitution)",
    ),
    _rule(
        "CMD-002",
        "cmdi",
        S.HIGH,
        {PATH, QUERY},
        r"\$\([^)]*\)|`[^`]*`|\$\{IFS\}|\$IFS\b",
        "shell substitution or $IFS",
    ),
    _rule(
        "CMD-003",
        "cmdi",
        S.CRITICAL,
        {PATH, QUERY, HEADERS},
        r"(?:^|[/=&])\s*\(\s*\)\s*\{",
        "Shellshock function definition (a value that starts with `() {`)",
    ),
    _rule(
        "CMD-004",
        "cmdi",
        S.CRITICAL,
        {PATH, QUERY, HEADERS},
        r"\$\{[^}]*\$\{|\$\{\s*(?:jndi|ctx|env|sys|java|lower|upper|date|main|base64|bundle|k8s"
        r"|docker|spring|web|log4j|marker|sd|event|map)\s*:|\$\{\s*::-",
        "Log4Shell lookup",
    ),
    # Cross-site scripting in the URL
    _rule(
        "XSS-001",
        "xss",
        S.MEDIUM,
        {PATH, QUERY},
        r"<\s*/?\s*(?:script|iframe|object|embed|svg|math|base|form|meta|link|style|img|body)\b"
        r"|<[a-z!/][^>]*\bon[a-z]+\s*=|\b(?:java|vb)script\s*:|\bdata\s*:\s*text/html",
        "script in the URL",
    ),
    # Scanners
    _rule(
        "SCN-001",
        "scanner",
        S.HIGH,
        {USER_AGENT},
        r"\b(?:sqlmap|nikto|nmap|masscan|zgrab|zmap|nuclei|dirbuster|dirsearch|gobuster|wpscan"
        r"|acunetix|nessus|openvas|w3af|havij|fimap|feroxbuster|ffuf|wfuzz|jaeles|netsparker"
        r"|burpcollaborator|appscan|arachni|skipfish|whatweb|zmeu|morfeus|commix|xsstrike"
        r"|fuzz faster u fool)\b",
        "scanner User-Agent",
    ),
    _rule(
        "SCN-002",
        "scanner",
        S.LOW,
        {PATH},
        r"\.(?:php\d?|phtml|asp|aspx|jsp|jspx|cfm|cgi|pl)(?:/|$)|/cgi-bin/|/xmlrpc"
        r"|/\.(?:git|svn|hg|ds_store)\b"
        r"|/(?:wp-includes|wp-content|phpmyadmin|pma|myadmin|administrator|manager/html)\b",
        "path of another web stack",
    ),
)


@dataclass(frozen=True)
class RuleSet:
    """Rules grouped by the input they read, with one combined pattern per input kind.

    `scan(kind, data)` is one linear pass over `data` that says whether any rule of
    that kind matches; only then `hits(kind, data)` asks each rule of the kind.
    """

    rules: tuple[Rule, ...]
    _by_kind: Mapping[str, tuple[LinearPattern, tuple[tuple[Rule, LinearPattern], ...]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        compiled = {rule.id: LinearPattern(rule.pattern) for rule in self.rules}
        by_kind = {}
        for kind in KINDS:
            rules = tuple((rule, compiled[rule.id]) for rule in self.rules if kind in rule.where)
            if rules:
                by_kind[kind] = (LinearPattern.any_of([r.pattern for r, _ in rules]), rules)
        object.__setattr__(self, "_by_kind", by_kind)

    @classmethod
    def without(cls, disabled: Iterable[str]) -> RuleSet:
        skipped = set(disabled)
        return cls(tuple(rule for rule in RULES if rule.id not in skipped))

    def reads(self, kind: str) -> bool:
        return kind in self._by_kind

    def scan(self, kind: str, data: bytes) -> bool:
        entry = self._by_kind.get(kind)
        return entry is not None and entry[0].search(data)

    def hits(self, kind: str, data: bytes) -> list[Rule]:
        entry = self._by_kind.get(kind)
        return [] if entry is None else [rule for rule, regex in entry[1] if regex.search(data)]
