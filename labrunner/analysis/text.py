"""The analysis as readable text: the seed's C:/S: blocks with ``// explanation``."""

from __future__ import annotations

from typing import Any

from labrunner.analysis.dialogue import tr
from labrunner.textsafe import safe


def _endpoint(ep: dict[str, Any]) -> str:
    return f"[{ep['ip']}]:{ep['port']}" if ":" in ep["ip"] else f"{ep['ip']}:{ep['port']}"


def render(doc: dict[str, Any]) -> str:
    lang = doc["lang"]
    cap = doc["capture"]
    decryption = {
        "none": tr(lang, "none", "无"),
        "embedded": tr(lang, "with the key log embedded in the capture", "用抓包文件中嵌入的密钥日志"),
        "keylog": tr(lang, "with the key log given (--keylog)", "用 --keylog 给出的密钥日志"),
    }.get(cap["decryption"], cap["decryption"])
    out = [tr(lang, f"{cap['file']}: {cap['frames']} frames, {len(doc['streams'])} TCP stream(s), "
                    f"{cap['duration']:.3f} s; tshark {cap['tshark']}; decryption: {decryption}",
              f"{cap['file']}：{cap['frames']} 帧，{len(doc['streams'])} 个 TCP 流，{cap['duration']:.3f} 秒；"
              f"tshark {cap['tshark']}；TLS 解密：{decryption}")]
    out += [f"! {n}" for n in doc["notes"]]
    for s in doc["streams"]:
        out.append("")
        out.append(f"== {tr(lang, 'stream', '流')} {s['index']}: {s['protocol']} ({s['security']})  "
                   f"{_endpoint(s['client'])} → {_endpoint(s['server'])}  "
                   f"{tr(lang, 'frames', '帧')} {s['first_frame']}–{s['last_frame']}")
        tls = s["tls"]
        if tls:
            state = tr(lang, "decrypted", "已解密") if tls["decrypted"] else tr(lang, "not decrypted", "未解密")
            dirs = tls.get("decrypted_dirs") or {}
            if tls["decrypted"] and tls.get("unreadable") and not all(dirs.values()):
                only = "C" if dirs.get("C") else "S"  # a side lost a segment (D4): say which was read
                state = tr(lang, f"decrypted: the {'client' if only == 'C' else 'server'}'s side only",
                           f"已解密：仅{'客户端' if only == 'C' else '服务器'}一方")
            what = f"{tls['version']} {tls['cipher_suite']}" if tls["server_hello"] else \
                tr(lang, "no handshake completed (no Server Hello)", "握手未完成（没有 Server Hello）")
            alert = f"  alert={tls['alert']}" if tls["alert"] and tls["alert"] != "close_notify" else ""
            out.append(f"   TLS: {what}  SNI={tls['sni'] or '-'}  "
                       f"{tr(lang, 'round trips', '往返')}={tls['round_trips']}  {state}{alert}")
            if tls["suite_parts"]:
                out.append(f"   // {tls['suite_parts']['explanation']}")
            cert = tls["certificate"]
            if cert:
                out.append(f"   {tr(lang, 'certificate', '证书')}: {cert['subject']}  ← {cert['issuer']}  "
                           f"{cert['key_type']} {cert.get('key_size') or ''}  "
                           f"{cert['not_before']} … {cert['not_after']}")
        width = max((len(line) for e in s["dialogue"] for line in e["text"].split("\n")), default=0)
        width = min(max(width, 30), 72)
        for e in s["dialogue"]:
            lines = e["text"].split("\n")
            mark = tr(lang, "[decrypted] ", "[已解密] ") if e["decrypted"] else ""
            for i, line in enumerate(lines):
                prefix = f"{e['dir']}: " if i == 0 else "   "
                head = f"{e['frame']:>6} {e['time']:>9.4f} " if i == 0 else " " * 17
                text = f"{head}{prefix}{line}"
                if i == len(lines) - 1 and e.get("explanation"):
                    text = f"{text:<{width + 20}} // {mark}{e['explanation']}"
                out.append(text.rstrip())
        st = s["stats"]
        rtt = st["rtt"]
        out.append(tr(lang, f"   {st['packets']} packets, {st['bytes']} bytes, "
                            f"{st['retransmissions']} retransmissions, {st['duplicate_acks']} duplicate ACKs, "
                            f"{st['out_of_order']} out of order"
                            + (f", RTT {rtt['avg'] * 1000:.2f} ms" if rtt else ""),
                      f"   {st['packets']} 个包，{st['bytes']} 字节，重传 {st['retransmissions']}，"
                      f"重复 ACK {st['duplicate_acks']}，乱序 {st['out_of_order']}"
                      + (f"，RTT {rtt['avg'] * 1000:.2f} ms" if rtt else "")))
        out += [f"   ! {n}" for n in s["notes"]]
    # Everything here comes from a capture someone else made: a server's reply (or anyone on a
    # plain-text path) may hold ESC, BEL, NUL, C1 or bidi controls. Escaped, they show what was
    # sent without acting on the terminal (security review F10).
    return safe("\n".join(out), newlines=True)
