"""The web-mail exercise: log in to a Roundcube web mail, compose and send a mail, as a browser does.

Every request is its own HTTPS connection from the target (as ``https`` steps are), so the
capture holds, decrypted with the key log: the login page (which sets the session cookie and
carries the form's CSRF token ``_token``), the login POST (the token, the session cookie,
the user name and the password in the form body), the mailbox, the compose page, the send
POST and the logout. The web mail hands the mail to its SMTP server inside the provider's
network, which the student's capture cannot see (as with QQ Mail); a later pop3/imap step
finds it by the Message-ID the web mail gave it, read back from the Sent folder.

The transcript shows the forms with the password replaced by «redacted» and every cookie
value masked; the session cookie logs in as well as the password does.

QQ Mail's web login needs a real browser (a QR code or a slider check, and scripts), so the
step refuses QQ hosts at once with a clear line instead of failing on a page it cannot read.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from html import unescape
from html.parser import HTMLParser
from urllib.parse import urlencode, urljoin, urlsplit

from labrunner.config.model import WebmailStep
from labrunner.errors import SessionError, UsageError
from labrunner.secrets import REDACTED
from labrunner.sessions.context import SentMessage, SessionContext, StepResult
from labrunner.sessions.https import check_step, exchange, https_context, masked_headers

# Web mails whose login a script cannot do: QQ Mail wants a QR code scan or a slider puzzle.
BROWSER_ONLY = (("qq.com", "QQ Mail"), ("foxmail.com", "QQ Mail (Foxmail)"))


def browser_only(host: str) -> str | None:
    """The name of the web mail at ``host`` when its login needs a real browser, else None."""
    host = host.lower().rstrip(".")
    for domain, name in BROWSER_ONLY:
        if host == domain or host.endswith("." + domain):
            return name
    return None


def unsupported(host: str) -> UsageError | None:
    name = browser_only(host)
    if name is None:
        return None
    return UsageError(
        f"webmail step: {host} is {name}, whose web login needs a browser (a QR code or slider check); "
        "labrunner logs in only to a Roundcube web mail such as the sandbox's",
        hint="run the web-mail scenario with the sandbox profile, or capture your own browser session "
             "with Wireshark and add it with `labrunner run --import SCENARIO=FILE` (see the README)")


@dataclass
class Form:
    attrs: dict[str, str]
    fields: list[tuple[str, str, str]] = field(default_factory=list)  # name, type, value

    def values(self) -> list[tuple[str, str]]:
        return [(name, value) for name, kind, value in self.fields
                if kind not in ("submit", "button", "image", "file", "reset")]

    def named(self, kind: str) -> str | None:
        return next((name for name, k, _ in self.fields if k == kind), None)


class _Forms(HTMLParser):
    """The forms of a page: their inputs, selects (the selected option) and textareas."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[Form] = []
        self._form: Form | None = None
        self._select: tuple[str, list[tuple[str, bool]]] | None = None
        self._textarea: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = Form(a)
            self.forms.append(self._form)
        elif self._form is None or "name" not in a:
            if tag == "option" and self._select is not None:
                self._select[1].append((a.get("value", ""), "selected" in a))
            return
        elif tag == "input":
            kind = a.get("type", "text").lower()
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            self._form.fields.append((a["name"], kind, a.get("value", "")))
        elif tag == "select":
            self._select = (a["name"], [])
        elif tag == "textarea":
            self._textarea = (a["name"], [])

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            self._textarea[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None
        elif tag == "select" and self._select is not None:
            name, options = self._select
            chosen = next((v for v, sel in options if sel), options[0][0] if options else "")
            if self._form is not None:
                self._form.fields.append((name, "select", chosen))
            self._select = None
        elif tag == "textarea" and self._textarea is not None:
            if self._form is not None:
                self._form.fields.append((self._textarea[0], "textarea", "".join(self._textarea[1])))
            self._textarea = None


def forms_of(body: bytes) -> list[Form]:
    parser = _Forms()
    parser.feed(body.decode("utf-8", "replace"))
    parser.close()
    return parser.forms


def _message(body: bytes) -> str | None:
    """The message Roundcube shows the user (display_message), e.g. "Login failed."."""
    m = re.search(rb'display_message\("((?:[^"\\]|\\.)*)"\s*,\s*"(error|warning)"', body)
    if not m:
        return None
    try:
        return str(json.loads(b'"' + m.group(1) + b'"'))
    except ValueError:
        return m.group(1).decode("utf-8", "replace")


class WebmailSession:
    def __init__(self, step: WebmailStep, ctx: SessionContext, result: StepResult, deadline: float) -> None:
        self.step = step
        self.ctx = ctx
        self.result = result
        self.deadline = deadline
        self.context = https_context(ctx, step.tls_version, step.ciphers)
        self.cookies: dict[str, str] = {}
        self.requests: list[dict[str, object]] = []
        self.where = f"web mail {result.host}:{result.port}"

    def note(self, key: str, **fields: str | int | None) -> None:
        conn = self.result.connections[-1].conn if self.result.connections else 0
        self.ctx.note(self.result, conn, key, direction="*", tls=False, **fields)

    def request(self, method: str, path: str, *, form: list[tuple[str, str]] | None = None,
                secret_field: str | None = None, ajax_token: str | None = None,
                what: str) -> tuple[int, list[tuple[str, str]], bytes]:
        headers: list[tuple[str, str]] = []
        if self.cookies:
            headers.append(("Cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items())))
        if ajax_token:
            headers.append(("X-Roundcube-Request", ajax_token))
        body, shown = b"", None
        if form is not None:
            headers.append(("Content-Type", "application/x-www-form-urlencoded"))
            body = urlencode(form).encode("ascii")
            shown = "&".join(urlencode([(k, v)]) if k != secret_field else f"{k}={REDACTED}" for k, v in form)
            shown = self.ctx.redactor(shown)
        status, reason, reply_headers, reply = exchange(
            self.ctx, self.result, self.context, method, path, self.deadline, headers=tuple(headers),
            body=body, shown_body=shown)
        for name, value in reply_headers:
            if name.lower() == "set-cookie":
                pair = value.split(";", 1)[0]
                key, _, val = pair.partition("=")
                gone = val in ("", "-del-", "deleted") or re.search(r"max-age=0\b", value, re.IGNORECASE)
                if gone:
                    self.cookies.pop(key.strip(), None)
                else:
                    self.cookies[key.strip()] = val.strip()
        self.requests.append({"what": what, "method": method, "path": path, "status": status, "reason": reason,
                              "headers": masked_headers(reply_headers), "body_size": len(reply),
                              "form_fields": [k for k, _ in form] if form is not None else None})
        return status, reply_headers, reply

    def location(self, headers: list[tuple[str, str]], current: str) -> str | None:
        loc = next((v for k, v in headers if k.lower() == "location"), None)
        if loc is None:
            return None
        url = urlsplit(urljoin(f"https://{self.result.host}:{self.result.port}{current}", loc.strip()))
        if url.hostname and url.hostname.lower() != self.result.host.lower():
            raise SessionError(f"{self.where}: redirected to another host ({loc})")
        return (url.path or "/") + (f"?{url.query}" if url.query else "")

    def get_following(self, path: str, what: str, limit: int = 3) -> tuple[str, bytes]:
        for _ in range(limit + 1):
            status, headers, body = self.request("GET", path, what=what)
            target = self.location(headers, path) if status in (301, 302, 303, 307, 308) else None
            if target is None:
                if status != 200:
                    raise SessionError(f"{self.where}: GET {path} → {status} ({what}; expected 200)",
                                       hint="check path: in the step: is the web mail there?")
                return path, body
            self.note("web_redirect", status=status, path=target)
            path = target
        raise SessionError(f"{self.where}: more than {limit} redirects from {what}")

    # --- the exercise ---------------------------------------------------------------------

    def run(self) -> None:
        step, ctx = self.step, self.ctx
        base = step.path
        page, body = self.get_following(base, "the login page")
        login = next((f for f in forms_of(body) if f.named("password")), None)
        if login is None:
            raise SessionError(f"{self.where}: no login form (with a password field) at {base}",
                               hint="the webmail step knows Roundcube's login form: is this a Roundcube web mail?")
        user_field = login.named("text") or login.named("email") or "_user"
        pass_field = login.named("password") or "_pass"
        token = dict(login.values()).get("_token")
        self.note("web_login_page", cookies=", ".join(self.cookies) or "none")
        fields = [(k, v) for k, v in login.values() if k not in (user_field, pass_field)]
        fields = [(k, "UTC" if k == "_timezone" and v in ("", "_default_") else v) for k, v in fields]
        fields += [(user_field, ctx.profile.account.login), (pass_field, ctx.secret)]
        action = self.location([("Location", login.attrs.get("action") or page)], page) or page
        self.note("web_log_in", names=", ".join(k for k, _ in fields))
        status, headers, reply = self.request("POST", action, form=fields, secret_field=pass_field, what="login")
        target = self.location(headers, action) if status in (302, 303) else None
        if target is None:
            said = _message(reply)
            raise SessionError(f"{self.where}: the login was refused: POST {action} → {status}"
                               + (f" ({said})" if said else ""),
                               hint="check the account's address and password in the profile")
        self.note("web_logged_in", cookies=", ".join(self.cookies))
        mailbox, body = self.get_following(target, "the mailbox")
        token = _env(body, "request_token") or token
        # compose: Roundcube redirects to a page with the compose id (_id)
        compose_path, body = self.get_following(_with(base, _task="mail", _action="compose"), "the compose page")
        compose = next((f for f in forms_of(body) if f.attrs.get("name") == "form"
                        and any(k == "_subject" for k, _, _ in f.fields)), None)
        if compose is None:
            raise SessionError(f"{self.where}: the compose page has no compose form",
                               hint="the webmail step knows Roundcube's compose form")
        to = ", ".join(step.to) if step.to else ctx.profile.account.address
        values = dict(compose.values())
        values.update({"_to": to, "_subject": step.subject, "_message": step.text, "_is_html": "0",
                       "editorSelector": "plain", "_action": "send"})
        send = list(values.items())
        action = self.location([("Location", compose.attrs.get("action") or compose_path)], compose_path) \
            or compose_path
        self.note("web_send", id=values.get("_id", "?"))
        status, _headers, reply = self.request("POST", action, form=send, what="send")
        if status != 200 or b"sent_successfully" not in reply:
            said = _message(reply)
            raise SessionError(f"{self.where}: the web mail did not send the mail: POST {action} → {status}"
                               + (f" ({said})" if said else ""),
                               hint="see the web mail's log (the sandbox: srv dir roundcube/logs/errors.log)")
        self.note("web_sent")
        sent = self.find_sent(base, token, step.subject)
        if token:
            self.note("web_log_out")
            self.request("GET", _with(base, _task="logout", _token=token), what="logout")
        data = sent
        headers_ = BytesHeaderParser(policy=compat32).parsebytes(data)
        message_id = (headers_.get("Message-ID") or "").strip()
        digest = hashlib.sha256(data).hexdigest()
        recipients = tuple(a.strip() for a in to.split(","))
        self.result.message = {"message_id": message_id, "subject": step.subject,
                               "from": ctx.profile.account.address, "recipients": list(recipients),
                               "size": len(data), "sha256": digest, "sent_by": "web mail"}
        self.result.body = data.decode("utf-8", "replace")  # as the web mail sent it (its Sent copy)
        self.result.details.update({"requests": self.requests, "cookies": sorted(self.cookies) or None,
                                    "login_form": [k for k, _ in fields], "mailbox": mailbox})
        if step.id and message_id:
            ctx.sent[step.id] = SentMessage(step.id, message_id, step.subject, data, digest, recipients)

    def find_sent(self, base: str, token: str | None, subject: str) -> bytes:
        """The sent mail as the web mail stored it in Sent (its source, with the Message-ID)."""
        status, _h, body = self.request("GET", _with(base, _task="mail", _action="list", _mbox="Sent", _remote="1"),
                                        ajax_token=token, what="the Sent folder")
        uids = []
        try:
            script = str(json.loads(body).get("exec", "")) if status == 200 else ""
        except (ValueError, AttributeError):
            script = ""
        if script:
            for m in re.finditer(r'add_message_row\((\d+),(\{.*?\}),\{', script):
                try:
                    row = json.loads(m.group(2))
                except ValueError:
                    continue
                if unescape(str(row.get("subject", ""))) == subject:
                    uids.append(int(m.group(1)))
        if not uids:
            raise SessionError(f"{self.where}: the sent mail is not in the Sent folder",
                               hint="the web mail sent it but did not keep a copy: check its Sent folder setting")
        uid = max(uids)
        status, _h, source = self.request(
            "GET", _with(base, _task="mail", _action="viewsource", _uid=str(uid), _mbox="Sent"),
            what="the sent mail's source")
        if status != 200 or b"Message-ID:" not in source[:65536].replace(b"Message-Id:", b"Message-ID:"):
            raise SessionError(f"{self.where}: no source of the sent mail (GET viewsource → {status})")
        self.note("web_sent_mail", uid=uid)
        # CRLF line ends as on the wire, the last line ended (viewsource leaves its end off)
        return source.replace(b"\r\n", b"\n").rstrip(b"\n").replace(b"\n", b"\r\n") + b"\r\n"


def _env(body: bytes, key: str) -> str | None:
    m = re.search(rb'"' + key.encode() + rb'":"([^"]+)"', body)
    return m.group(1).decode("ascii", "replace") if m else None


def _with(base: str, **query: str) -> str:
    return base.split("?", 1)[0] + "?" + urlencode(query)


def run(step: WebmailStep, ctx: SessionContext, result: StepResult, step_deadline: float) -> None:
    refused = unsupported(result.host)
    if refused is not None:
        raise refused
    check_step("webmail", step.tls_version, step.ciphers, step.path)
    WebmailSession(step, ctx, result, step_deadline).run()
