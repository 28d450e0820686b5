"""SMTP (RFC 5321, 3207 STARTTLS, 4954 AUTH, 2920 PIPELINING): reply codes and commands."""

# ruff: noqa: E501  (one table entry per line, zh beside en, reads better than wrapped text)

from __future__ import annotations

from labrunner.protocols import ProviderHint, lookup, provider_hint
from labrunner.text import Text

# The replies the session code tests for, named as in RFC 5321 section 4.2.
SERVICE_READY = 220
CLOSING = 221
AUTH_SUCCESSFUL = 235
OK = 250
AUTH_CONTINUE = 334
START_MAIL_INPUT = 354
SERVICE_NOT_AVAILABLE = 421
MAILBOX_BUSY = 450
LOCAL_ERROR = 451
INSUFFICIENT_STORAGE = 452
SYNTAX_ERROR = 500
PARAM_SYNTAX_ERROR = 501
NOT_IMPLEMENTED = 502
BAD_SEQUENCE = 503
PARAM_NOT_IMPLEMENTED = 504
AUTH_REQUIRED = 530
AUTH_FAILED = 535
MAILBOX_UNAVAILABLE = 550
USER_NOT_LOCAL = 551
EXCEEDED_STORAGE = 552
MAILBOX_NAME_INVALID = 553
TRANSACTION_FAILED = 554

# What a scenario's smtp step may name (config/schema.py checks them, sessions/smtp.py uses them).
# The phases of a session, as sessions/smtp.py runs them: the keys of an smtp step's `expect` (the
# first word of an `extra` command, noop, rset, vrfy ..., may be given an expected code as well).
PHASES = ("greeting", "ehlo", "helo", "starttls", "auth", "mail", "rcpt", "data", "message", "quit")
EXTRA = ("NOOP", "RSET", "VRFY", "EXPN", "HELP")  # commands an smtp step may add before QUIT
OWN = ("HELO", "EHLO", "STARTTLS", "AUTH", "MAIL", "RCPT", "DATA", "QUIT", "BDAT")  # the step's own

REPLIES: dict[int, Text] = {
    211: Text("系统状态或帮助回复", "System status or help reply"),
    214: Text("帮助信息", "Help message"),
    220: Text("服务就绪：服务器问候，可以开始会话", "Service ready: the server's greeting, the session can start"),
    221: Text("服务关闭传输通道：会话正常结束", "Service closing transmission channel: the session ended normally"),
    235: Text("认证成功", "Authentication successful"),
    250: Text("请求的操作完成", "Requested action okay, completed"),
    251: Text("用户非本地，将转发", "User not local; will forward"),
    252: Text("无法验证用户，但会尝试投递", "Cannot verify the user, but will accept the message and attempt delivery"),
    334: Text("认证继续：服务器等待下一段 Base64 数据（VXNlcm5hbWU6 即 “Username:”，UGFzc3dvcmQ6 即 “Password:”）",
              "Authentication continues: the server waits for the next base64 line "
              "(VXNlcm5hbWU6 is “Username:”, UGFzc3dvcmQ6 is “Password:”)"),
    354: Text("开始输入邮件内容，以单独一行的 “.” 结束", "Start mail input; end with a line holding only “.”"),
    421: Text("服务不可用，服务器将关闭连接", "Service not available, closing the connection"),
    450: Text("邮箱暂时不可用（如忙或被临时拒绝），请稍后重试", "Mailbox unavailable for now (busy or temporarily refused); try later"),
    451: Text("服务器本地处理错误，操作中止", "Local error in processing; action aborted"),
    452: Text("服务器存储空间不足", "Insufficient system storage"),
    454: Text("暂时无法进行 TLS 或认证", "TLS or authentication temporarily not available"),
    500: Text("语法错误，命令无法识别（或命令行太长）", "Syntax error, command unrecognised (or line too long)"),
    501: Text("参数语法错误", "Syntax error in parameters or arguments"),
    502: Text("命令未实现", "Command not implemented"),
    503: Text("命令顺序错误（例如未认证就发信，或未 RCPT 就 DATA）",
              "Bad sequence of commands (for example mail before AUTH, or DATA before RCPT)"),
    504: Text("命令参数未实现（例如不支持的认证方式）", "Command parameter not implemented (for example an unsupported AUTH mechanism)"),
    530: Text("需要先认证（或先 STARTTLS）", "Authentication required (or STARTTLS first)"),
    534: Text("认证机制太弱，服务器不接受", "Authentication mechanism is too weak"),
    535: Text("认证失败：用户名或密码（授权码）错误", "Authentication failed: wrong user name or password (authorization code)"),
    538: Text("该认证方式要求先加密连接", "Encryption required for this authentication mechanism"),
    550: Text("邮箱不可用：收件人不存在或被拒绝，或发件人不被允许", "Mailbox unavailable: no such recipient, or the address was refused"),
    551: Text("用户非本地", "User not local"),
    552: Text("超出存储分配（邮件太大或邮箱已满）", "Exceeded storage allocation (message too big or mailbox full)"),
    553: Text("邮箱名称不被允许（地址格式错误或发件人与登录账户不符）",
              "Mailbox name not allowed (bad address, or the sender is not the logged-in account)"),
    554: Text("事务失败（例如被判为垃圾邮件或没有有效收件人）", "Transaction failed (for example spam rejected, or no valid recipients)"),
}

# What the first digit says when the exact code is not in the table (RFC 5321 section 4.2.1).
CLASSES: dict[int, Text] = {
    2: Text("成功", "Success"),
    3: Text("中间状态，等待更多输入", "Intermediate: more input expected"),
    4: Text("暂时性失败，可稍后重试", "Transient failure; retrying later may work"),
    5: Text("永久性失败", "Permanent failure"),
}

COMMANDS: dict[str, Text] = {
    "HELO": Text("向服务器表明客户端身份（SMTP）", "Identify the client to the server (plain SMTP)"),
    "EHLO": Text("表明身份并请求服务器列出扩展（ESMTP）", "Identify the client and ask for the server's extensions (ESMTP)"),
    "STARTTLS": Text("把当前明文连接升级为 TLS 加密连接", "Upgrade this plain connection to TLS"),
    "AUTH": Text("登录认证（LOGIN/PLAIN 以 Base64 传送用户名和密码）",
                 "Log in (LOGIN/PLAIN carry the user name and password in base64)"),
    "MAIL": Text("MAIL FROM：给出信封发件人", "MAIL FROM: the envelope sender"),
    "RCPT": Text("RCPT TO：给出一个信封收件人（可多次）", "RCPT TO: one envelope recipient (may repeat)"),
    "DATA": Text("开始传送邮件内容（首部和正文）", "Start sending the message (headers and body)"),
    "BDAT": Text("分块发送邮件内容（CHUNKING，RFC 3030）：命令后紧跟给定字节数的内容，LAST 表示最后一块", "Send the message in chunks (CHUNKING, RFC 3030): the given number of bytes follows the command at once; LAST marks the last chunk"),
    "RSET": Text("放弃当前邮件事务", "Abort the current mail transaction"),
    "NOOP": Text("空操作，保持连接", "No operation; keeps the connection alive"),
    "VRFY": Text("验证地址", "Verify an address"),
    "HELP": Text("请求帮助", "Ask for help"),
    "QUIT": Text("结束会话", "End the session"),
}

PROVIDER_HINTS: tuple[ProviderHint, ...] = (
    ProviderHint("qq.com", 535, Text(
        "授权码错误，或未在 QQ 邮箱“设置 → 账户”中开启 POP3/SMTP 服务；请使用授权码而不是 QQ 密码",
        "the authorization code is wrong or POP3/SMTP service is not enabled in QQ Mail settings "
        "(Settings → Accounts); use the authorization code, not the QQ password")),
    ProviderHint("qq.com", 530, Text(
        "QQ 邮箱要求先登录（AUTH LOGIN）再发信", "QQ Mail requires AUTH LOGIN before MAIL FROM")),
    ProviderHint("qq.com", 501, Text(
        "QQ 邮箱要求 MAIL FROM 与登录账户一致", "QQ Mail requires MAIL FROM to be the logged-in address")),
)

# Hints for any server, when no provider hint applies.
HINTS: dict[int, Text] = {
    535: Text("检查 lab.yaml 中账户的登录名，以及环境变量中的密码或授权码",
              "check the account's login name in lab.yaml and the password or authorization code in the environment"),
    530: Text("在场景中打开认证（auth: login 或 plain），或先使用 STARTTLS",
              "enable authentication in the scenario (auth: login or plain), or use STARTTLS first"),
    550: Text("检查收件人地址是否存在、是否拼写正确", "check that the recipient address exists and is spelled right"),
    553: Text("发件人地址应与登录账户一致", "the sender should be the logged-in account's address"),
    554: Text("服务器拒绝了邮件；查看回复文字了解原因", "the server refused the message; its reply text says why"),
    421: Text("服务器繁忙或限流，请稍后再试", "the server is busy or rate-limiting; try again later"),
}


def explain(code: int | str, lang: str = "zh") -> str:
    """What a reply code (int) or a command word (str) means, in ``lang``."""
    if isinstance(code, str):
        if code.isdigit():
            code = int(code)
        else:
            return lookup(COMMANDS, code.split()[0] if code.strip() else code, lang)
    entry = REPLIES.get(code) or CLASSES.get(code // 100)
    return entry.get(lang) if entry else ""


def hint(code: int, host: str, lang: str = "en") -> str:
    """Advice for a failing reply: the provider's own first, then the generic one."""
    found = provider_hint(PROVIDER_HINTS, host, code, lang)
    if found:
        return found
    entry = HINTS.get(code)
    return entry.get(lang) if entry else ""
