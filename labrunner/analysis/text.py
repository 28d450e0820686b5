"""The analysis as readable text: the seed's C:/S: blocks with ``// explanation``."""

from __future__ import annotations

from typing import Any

from labrunner.text import Text, in_language
from labrunner.textsafe import safe


def _endpoint(ep: dict[str, Any]) -> str:
    return f"[{ep['ip']}]:{ep['port']}" if ":" in ep["ip"] else f"{ep['ip']}:{ep['port']}"


def render(doc: dict[str, Any]) -> str:
    """``doc`` in its language (``lang``: what the analysis says is in both, docs/analysis.md)."""
    lang = doc["lang"]
    doc = in_language(doc, lang)
    cap = doc["capture"]
    decryption = {
        "none": Text("无", "none").get(lang),
        "embedded": Text("用抓包文件中嵌入的密钥日志", "with the key log embedded in the capture").get(lang),
        "keylog": Text("用 --keylog 给出的密钥日志", "with the key log given (--keylog)").get(lang),
    }.get(cap["decryption"], cap["decryption"])
    n = len(doc["streams"])
    out = [Text(f"{cap['file']}：{cap['frames']} 帧，{n} 个 TCP 流，{cap['duration']:.3f} 秒；"
                f"tshark {cap['tshark']}；TLS 解密：{decryption}",
                f"{cap['file']}: {cap['frames']} frames, {n} TCP stream(s), "
                f"{cap['duration']:.3f} s; tshark {cap['tshark']}; decryption: {decryption}").get(lang)]
    out += [f"! {n}" for n in doc["notes"]]
    for s in doc["streams"]:
        out.append("")
        out.append(f"== {Text('流', 'stream').get(lang)} {s['index']}: {s['protocol']} ({s['security']})  "
                   f"{_endpoint(s['client'])} → {_endpoint(s['server'])}  "
                   f"{Text('帧', 'frames').get(lang)} {s['first_frame']}–{s['last_frame']}")
        tls = s["tls"]
        if tls:
            state = (Text("已解密", "decrypted") if tls["decrypted"] else Text("未解密", "not decrypted")).get(lang)
            dirs = tls.get("decrypted_dirs") or {}
            if tls["decrypted"] and tls.get("unreadable") and not all(dirs.values()):
                only = "C" if dirs.get("C") else "S"  # a side lost a segment (D4): say which was read
                state = (Text("已解密：仅客户端一方", "decrypted: the client's side only") if only == "C" else
                         Text("已解密：仅服务器一方", "decrypted: the server's side only")).get(lang)
            what = f"{tls['version']} {tls['cipher_suite']}" if tls["server_hello"] else \
                Text("握手未完成（没有 Server Hello）", "no handshake completed (no Server Hello)").get(lang)
            alert = f"  alert={tls['alert']}" if tls["alert"] and tls["alert"] != "close_notify" else ""
            out.append(f"   TLS: {what}  SNI={tls['sni'] or '-'}  "
                       f"{Text('往返', 'round trips').get(lang)}={tls['round_trips']}  {state}{alert}")
            if tls["suite_parts"]:
                out.append(f"   // {tls['suite_parts']['explanation']}")
            cert = tls["certificate"]
            if cert:
                out.append(f"   {Text('证书', 'certificate').get(lang)}: {cert['subject']}  ← {cert['issuer']}  "
                           f"{cert['key_type']} {cert.get('key_size') or ''}  "
                           f"{cert['not_before']} … {cert['not_after']}")
        width = max((len(line) for e in s["dialogue"] for line in e["text"].split("\n")), default=0)
        width = min(max(width, 30), 72)
        for e in s["dialogue"]:
            lines = e["text"].split("\n")
            mark = Text("[已解密] ", "[decrypted] ").get(lang) if e["decrypted"] else ""
            for i, line in enumerate(lines):
                prefix = f"{e['dir']}: " if i == 0 else "   "
                head = f"{e['frame']:>6} {e['time']:>9.4f} " if i == 0 else " " * 17
                text = f"{head}{prefix}{line}"
                if i == len(lines) - 1 and e.get("explanation"):
                    text = f"{text:<{width + 20}} // {mark}{e['explanation']}"
                out.append(text.rstrip())
        st = s["stats"]
        rtt = st["rtt"]
        out.append(Text(f"   {st['packets']} 个包，{st['bytes']} 字节，重传 {st['retransmissions']}，"
                        f"重复 ACK {st['duplicate_acks']}，乱序 {st['out_of_order']}"
                        + (f"，RTT {rtt['avg'] * 1000:.2f} ms" if rtt else ""),
                        f"   {st['packets']} packets, {st['bytes']} bytes, "
                        f"{st['retransmissions']} retransmissions, {st['duplicate_acks']} duplicate ACKs, "
                        f"{st['out_of_order']} out of order"
                        + (f", RTT {rtt['avg'] * 1000:.2f} ms" if rtt else "")).get(lang))
        out += [f"   ! {n}" for n in s["notes"]]
    # Everything here comes from a capture someone else made: a server's reply (or anyone on a
    # plain-text path) may hold ESC, BEL, NUL, C1 or bidi controls. Escaped, they show what was
    # sent without acting on the terminal (security review F10).
    return safe("\n".join(out), newlines=True)
