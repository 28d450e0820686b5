"""IMAP4rev1 (RFC 3501, 2595 STARTTLS, 5530 response codes): statuses and commands."""



from __future__ import annotations

from labrunner.protocols import ProviderHint, command_hint, explain_command_word, explain_word
from labrunner.text import Text

OK = "OK"
NO = "NO"
BAD = "BAD"
BYE = "BYE"
PREAUTH = "PREAUTH"

# What an `expect` of a scenario's imap step may give (config/schema.py checks it).
REPLY_WORDS = (OK, NO, BAD, PREAUTH, BYE, "+")

REPLIES: dict[str, Text] = {
    "OK": Text("成功", "Success"),
    "NO": Text("操作失败（命令正确，但服务器拒绝执行）", "Failure: the command was understood but refused"),
    "BAD": Text("命令错误（语法或状态不对）", "Bad command: wrong syntax or wrong state"),
    "BYE": Text("服务器将关闭连接", "The server is closing the connection"),
    "PREAUTH": Text("连接已预先认证，无需登录", "The connection is already authenticated"),
    # RFC 5530 response codes, shown in brackets after the status
    "AUTHENTICATIONFAILED": Text("认证失败：用户名或密码（授权码）错误",
                                 "Authentication failed: wrong user name or password (authorization code)"),
    "AUTHORIZATIONFAILED": Text("认证成功但无权使用该身份", "Authenticated, but not allowed to use that identity"),
    "PRIVACYREQUIRED": Text("需要先加密连接（STARTTLS）", "Encryption required first (STARTTLS)"),
    "UNAVAILABLE": Text("服务暂时不可用", "Temporarily unavailable"),
    "NONEXISTENT": Text("邮箱（文件夹）不存在", "The mailbox (folder) does not exist"),
    "ALERT": Text("服务器要求向用户显示的提示", "A message the server wants the user to read"),
    "TRYCREATE": Text("目标邮箱不存在，可先创建", "The target mailbox does not exist; create it first"),
    "READ-WRITE": Text("邮箱以读写方式打开", "The mailbox is open read-write"),
    "READ-ONLY": Text("邮箱以只读方式打开", "The mailbox is open read-only"),
    "CAPABILITY": Text("服务器能力列表", "The server's capabilities"),
    "UIDVALIDITY": Text("邮箱 UID 的有效性标识", "The mailbox's UID validity value"),
}

COMMANDS: dict[str, Text] = {
    "CAPABILITY": Text("列出服务器支持的能力", "List the server's capabilities"),
    "STARTTLS": Text("把当前明文连接升级为 TLS", "Upgrade this plain connection to TLS"),
    "LOGIN": Text("用用户名和密码登录（明文！没有 TLS 时可被抓包看到）",
                  "Log in with user name and password (in clear text unless TLS is on)"),
    "AUTHENTICATE": Text("SASL 认证：PLAIN/LOGIN 以 Base64 传送用户名和密码",
                         "SASL authentication: PLAIN/LOGIN carry the user name and password in base64"),
    "APPEND": Text("把一封邮件存入邮箱", "Store a message in a mailbox"),
    "SELECT": Text("打开一个邮箱（文件夹）", "Open a mailbox (folder)"),
    "EXAMINE": Text("以只读方式打开邮箱", "Open a mailbox read-only"),
    "SEARCH": Text("按条件查找邮件，返回编号", "Find messages by criteria; returns their numbers"),
    "FETCH": Text("取回邮件的部分或全部内容", "Retrieve parts of messages or whole messages"),
    "NOOP": Text("空操作，也用来获取新邮件通知", "No operation; also polls for new mail"),
    "LOGOUT": Text("结束会话", "End the session"),
}

PROVIDER_HINTS: tuple[ProviderHint, ...] = (
    ProviderHint("qq.com", "NO", Text(
        "授权码错误，或未在 QQ 邮箱“设置 → 账户”中开启 IMAP/SMTP 服务",
        "the authorization code is wrong or IMAP/SMTP service is not enabled in QQ Mail settings")),
)

HINTS: dict[str, Text] = {
    "LOGIN": Text("检查 lab.yaml 中的登录名，以及环境变量中的密码或授权码",
                  "check the login name in lab.yaml and the password or authorization code in the environment"),
    "SELECT": Text("检查场景中的 mailbox 名称", "check the mailbox name in the scenario"),
}


def explain(status_or_command: str, lang: str = "zh") -> str:
    """What a status (OK/NO/BAD/BYE), a response code or a command word means."""
    return explain_word(REPLIES, COMMANDS, status_or_command, lang)


def explain_command(verb: str, lang: str = "zh") -> str:
    """What a command means (CAPABILITY is also a response code: a command reads as a command)."""
    return explain_command_word(COMMANDS, verb, lang)


def hint(command: str, host: str, lang: str = "en") -> str:
    """Advice when ``command`` got NO or BAD."""
    return command_hint(command, host, lang, login_verbs=("LOGIN", "AUTHENTICATE"), refusal=NO,
                        providers=PROVIDER_HINTS, generic=HINTS)
