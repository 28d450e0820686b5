"""POP3 (RFC 1939, 2449 CAPA, 2595 STLS, 3206 response codes): replies and commands."""

# ruff: noqa: E501  (one table entry per line, zh beside en, reads better than wrapped text)

from __future__ import annotations

from labrunner.protocols import ProviderHint, command_hint, explain_command_word, explain_word
from labrunner.text import Text

OK = "+OK"
ERR = "-ERR"

# What a scenario's pop3 step may name (config/schema.py checks them, sessions/pop3.py sends them).
REPLY_WORDS = (OK, ERR)  # what an `expect` of a pop3 step may give
# Commands a step may add; login, STLS, RETR of the found mail and QUIT are the step's own.
STEP_COMMANDS = ("STAT", "LIST", "UIDL", "TOP", "RETR", "DELE", "NOOP", "RSET", "CAPA")
OWN = ("USER", "PASS", "APOP", "AUTH", "STLS", "QUIT")

# Commands whose +OK reply is followed by lines ending with "." (RFC 1939, RFC 2449). LIST and
# UIDL are multi-line only without an argument.
MULTILINE = frozenset({"CAPA", "RETR", "TOP"})
MULTILINE_WITHOUT_ARG = frozenset({"LIST", "UIDL"})

REPLIES: dict[str, Text] = {
    "+OK": Text("成功", "Success"),
    "-ERR": Text("失败", "Failure"),
    # RFC 2449 / RFC 3206 extended response codes, shown in brackets after -ERR
    "AUTH": Text("认证失败：用户名或密码（授权码）错误", "Authentication failed: wrong user name or password (authorization code)"),
    "SYS/TEMP": Text("服务器暂时故障，稍后重试", "Temporary server failure; try again later"),
    "SYS/PERM": Text("服务器永久故障", "Permanent server failure"),
    "IN-USE": Text("邮箱正被另一个会话使用", "The mailbox is in use by another session"),
    "LOGIN-DELAY": Text("登录过于频繁，请稍后再试", "Logged in too often; wait before trying again"),
}

COMMANDS: dict[str, Text] = {
    "USER": Text("给出用户名", "Give the user name"),
    "PASS": Text("给出密码（明文！没有 TLS 时可被抓包看到）", "Give the password (in clear text unless TLS is on)"),
    "AUTH": Text("SASL 认证（RFC 5034）：PLAIN/LOGIN 以 Base64 传送用户名和密码", "SASL authentication (RFC 5034): PLAIN/LOGIN carry the user name and password in base64"),
    "APOP": Text("用 MD5 摘要登录，密码不在网络上传送", "Log in with an MD5 digest; the password does not cross the network"),
    "CAPA": Text("列出服务器支持的扩展", "List the server's capabilities"),
    "STLS": Text("把当前明文连接升级为 TLS", "Upgrade this plain connection to TLS"),
    "STAT": Text("邮箱状态：邮件数和总字节数", "Mailbox status: number of messages and total size"),
    "LIST": Text("列出每封邮件的编号和大小", "List each message's number and size"),
    "UIDL": Text("列出每封邮件的唯一标识", "List each message's unique id"),
    "RETR": Text("取回整封邮件", "Retrieve a whole message"),
    "TOP": Text("取回邮件首部和正文前若干行", "Retrieve the headers and the first lines of the body"),
    "DELE": Text("标记删除邮件（QUIT 时生效）", "Mark a message as deleted (done at QUIT)"),
    "NOOP": Text("空操作", "No operation"),
    "RSET": Text("取消删除标记", "Undo the deletion marks"),
    "QUIT": Text("结束会话并提交删除", "End the session and commit deletions"),
}

PROVIDER_HINTS: tuple[ProviderHint, ...] = (
    ProviderHint("qq.com", "-ERR", Text(
        "授权码错误，或未在 QQ 邮箱“设置 → 账户”中开启 POP3/SMTP 服务",
        "the authorization code is wrong or POP3/SMTP service is not enabled in QQ Mail settings")),
)

HINTS: dict[str, Text] = {
    "PASS": Text("检查 lab.yaml 中的登录名，以及环境变量中的密码或授权码",
                 "check the login name in lab.yaml and the password or authorization code in the environment"),
    "APOP": Text("APOP 需要服务器保存明文密码；改用 auth: user", "APOP needs the server to keep the plain password; use auth: user"),
}


def explain(reply_or_command: str, lang: str = "zh") -> str:
    """What a status (+OK/-ERR), a response code (AUTH, IN-USE, ...) or a command means."""
    return explain_word(REPLIES, COMMANDS, reply_or_command, lang)


def explain_command(verb: str, lang: str = "zh") -> str:
    """What a command means (never a response code of the same name: AUTH is both)."""
    return explain_command_word(COMMANDS, verb, lang)


def hint(command: str, host: str, lang: str = "en") -> str:
    """Advice when ``command`` got -ERR."""
    return command_hint(command, host, lang, login_verbs=("USER", "PASS", "APOP"), refusal=ERR,
                        providers=PROVIDER_HINTS, generic=HINTS)
