"""The TLS handshake of one connection, from the fields Wireshark's TLS dissector extracts."""

from __future__ import annotations

import contextlib
import copy
from functools import lru_cache
from typing import Any

from labrunner.analysis.tshark import name_of, sig_name
from labrunner.text import Text

HANDSHAKE = {0: "Hello Request", 1: "Client Hello", 2: "Server Hello", 4: "New Session Ticket",
             5: "End of Early Data", 8: "Encrypted Extensions", 11: "Certificate",
             12: "Server Key Exchange", 13: "Certificate Request", 14: "Server Hello Done",
             15: "Certificate Verify", 16: "Client Key Exchange", 20: "Finished", 24: "Key Update"}
VERSIONS = {0x0300: "SSL 3.0", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2", 0x0304: "TLS 1.3"}
ALERTS = {0: "close_notify", 10: "unexpected_message", 20: "bad_record_mac", 40: "handshake_failure",
          42: "bad_certificate", 43: "unsupported_certificate", 44: "certificate_revoked",
          45: "certificate_expired", 46: "certificate_unknown", 47: "illegal_parameter", 48: "unknown_ca",
          50: "decode_error", 51: "decrypt_error", 70: "protocol_version", 71: "insufficient_security",
          80: "internal_error", 86: "inappropriate_fallback", 90: "user_canceled",
          109: "missing_extension", 110: "unsupported_extension", 112: "unrecognized_name",
          116: "certificate_required", 120: "no_application_protocol"}

CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APPDATA = 20, 21, 22, 23

# What the alerts that end a handshake mean (RFC 8446 6.2), for the failed handshake's line
ALERT_MEANING: dict[str, Text] = {
    "handshake_failure": Text("双方没有都能接受的参数（密码套件、组或签名算法）",
                              "no set of parameters (cipher suite, group, signature) both sides accept"),
    "protocol_version": Text("双方没有都支持的 TLS 版本", "no TLS version both sides accept"),
    "insufficient_security": Text("对方要求更强的加密算法", "the other side requires stronger ciphers"),
    "unknown_ca": Text("证书的签发者不受信任", "the certificate's issuer is not trusted"),
    "bad_certificate": Text("证书被拒绝", "the certificate was rejected"),
    "certificate_unknown": Text("证书被拒绝", "the certificate was rejected"),
    "certificate_expired": Text("证书已过期", "the certificate has expired"),
    "unrecognized_name": Text("服务器不认识所请求的名称（SNI）", "the server does not know the name asked for (SNI)"),
    "no_application_protocol": Text("双方没有共同的应用层协议（ALPN）",
                                    "no application protocol (ALPN) both sides accept"),
    "decode_error": Text("消息无法解析", "a message could not be parsed"),
    "illegal_parameter": Text("消息中的某个字段不合法", "a field of a message was out of range"),
}


def _version(value: str) -> str:
    with contextlib.suppress(ValueError):
        return VERSIONS.get(int(value, 0), value)
    return value


def _first(values: list[str]) -> str | None:
    """The first occurrence of a field in the frame (a random, a public key: hex), or None."""
    return values[0] if values else None


def _ints(values: list[str]) -> list[int]:
    out = []
    for v in values:
        with contextlib.suppress(ValueError):
            out.append(int(v, 0))
    return out


def certificate(der_hex: str) -> dict[str, Any] | None:
    """The certificate summary the sessions also write (one format for the report), from hex DER:
    each connection to a server carries the same chain, parsed once (~0.2 ms a certificate; a
    capture of some hundred connections to one mail server spent a tenth of its analysis there).
    A copy each time: a summary is part of each stream's document."""
    summary = _summary(der_hex.replace(":", ""))
    return copy.deepcopy(summary) if summary is not None else None


@lru_cache(maxsize=256)
def _summary(der_hex: str) -> dict[str, Any] | None:
    from labrunner.certificates import certificate_summary

    try:
        return certificate_summary(bytes.fromhex(der_hex))
    except ValueError:
        return None


def suite_parts(name: str, *, key_share: str | None, cert: dict[str, Any] | None) -> dict[str, Any]:
    """What each part of a cipher suite name does (TLS 1.2 names carry all four; 1.3 only two),
    the words in both languages (Text.pair: docs/analysis.md)."""
    auth: str | None
    body = name.removeprefix("TLS_")
    if "_WITH_" in body:
        kx_auth, cipher_mac = body.split("_WITH_", 1)
        kx, _, auth = kx_auth.partition("_")
        auth = auth or kx
        cipher, _, mac = cipher_mac.rpartition("_")
        if cipher.endswith("_CCM") or not cipher:
            cipher, mac = cipher_mac, "AEAD"
    else:  # TLS 1.3: key exchange and authentication are negotiated separately
        cipher, _, mac = body.rpartition("_")
        kx = f"(EC)DHE ({key_share})" if key_share else "(EC)DHE"
        auth = cert["key_type"] if cert else None
    aead = "GCM" in cipher or "CCM" in cipher or "POLY1305" in cipher
    mac_role = Text(f"{mac} 用于 PRF/HKDF 密钥派生；完整性由 AEAD 加密算法保证",
                    f"{mac} is the hash of the PRF/HKDF; integrity comes from the AEAD cipher") if aead else \
        Text(f"HMAC-{mac} 保证完整性", f"HMAC-{mac} protects integrity")
    who = _HIDDEN_SIGNATURE if auth is None else Text(auth, auth)
    explanation = Text(
        f"密钥交换 {kx}：双方协商出共享密钥{'（具备前向安全性）' if 'DHE' in kx else ''}；身份认证 {who.zh}："
        f"服务器证明自己拥有证书私钥；对称加密 {cipher}：加密应用数据；{mac_role.zh}。",
        f"key exchange {kx}: both sides agree on the secret{' with forward secrecy' if 'DHE' in kx else ''}; "
        f"authentication {who.en}: the server proves it owns the certificate; bulk cipher {cipher} encrypts "
        f"the data; {mac_role.en}.")
    return {"key_exchange": kx, "authentication": _HIDDEN_SIGNATURE.pair if auth is None else auth,
            "cipher": cipher, "mac": mac, "explanation": explanation.pair}


_HIDDEN_SIGNATURE = Text("证书签名（不可见）", "certificate signature (not visible)")


def _header_at(data: bytes, i: int) -> bool:
    return len(data) >= i + 5 and 20 <= data[i] <= 23 and data[i + 1] == 3 and data[i + 2] <= 4


class RecordWalker:
    """TLS record headers in the raw segments of one direction for which tshark reported no
    record. Normally those are pieces of a record tshark reports a few frames later (``reset``
    then drops what was walked). After a segment the capture lost, tshark waits for it for the
    rest of the capture and reports nothing more in that direction: what was walked here is then
    all anyone can say of it (D4): the records' sizes and times, as a passive observer sees them.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.synced = False
        self.need = 0  # bytes left of the record being walked
        self.records: list[tuple[int, float, int, int]] = []  # frame, time, content type, length
        self.bytes = 0
        self.first = 0
        self.first_time = 0.0
        self.last = 0
        self.last_time = 0.0
        self.at = 0  # where in the dialogue these bytes flowed (an index into the entries)

    def add(self, data: bytes, frame: int, time: float, at: int) -> None:
        if not self.bytes:
            self.first, self.first_time, self.at = frame, time, at
        self.bytes += len(data)
        self.last, self.last_time = frame, time
        if not self.synced:
            if not _header_at(data, 0):
                return  # inside a record whose start was not walked: wait for a segment starting one
            self.synced, self.need = True, 0
        if self.need >= len(data):
            self.need -= len(data)
            return
        i = self.need
        while len(self.records) < 100000:
            if not _header_at(data, i):
                self.synced = i == len(data)  # a header split across segments: resync later
                self.need = 0
                return
            length = int.from_bytes(data[i + 3:i + 5], "big")
            self.records.append((frame, time, data[i], length))
            i += 5 + length
            if i >= len(data):
                self.need = i - len(data)
                return


class Handshake:
    """Accumulates one stream's TLS records; ``result`` gives the TLS object of the JSON."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.ccs: list[dict[str, Any]] = []
        self.finished: list[dict[str, Any]] = []
        self.client_hello: dict[str, Any] | None = None
        self.server_hello: dict[str, Any] | None = None
        self.ske: dict[str, Any] | None = None
        self.chain: list[dict[str, Any]] = []
        self.sni: str | None = None
        self.alpn_offered: list[str] = []
        self.alpn_chosen: str | None = None
        self.first_app: dict[str, float] = {}
        self.seen_ccs = {"C": False, "S": False}
        self.decrypted = False
        self.decrypted_dirs = {"C": False, "S": False}  # application data read in that direction
        self.unreadable: dict[str, int] = {}  # direction -> TLS bytes Wireshark could not read (D4)
        self.alert: str | None = None
        self.start_frame: int | None = None

    def app_data(self, d: str, frame: int, time: float, *, decrypted_data: bool) -> None:
        """``frame`` for a frame whose records are all application data, no handshake message
        (most of a connection's frames): what ``frame`` notes of them, without its fields."""
        if self.start_frame is None:
            self.start_frame = frame
        if decrypted_data:
            self.decrypted = True
            self.decrypted_dirs[d] = True
        self.first_app.setdefault(d, time)

    def frame(self, d: str, frame: int, time: float, f: dict[str, list[str]], *, decrypted_data: bool) -> None:
        cts = _ints(f["tls.record.content_type"])
        hs_types = _ints(f["tls.handshake.type"])
        if self.start_frame is None and (cts or hs_types):
            self.start_frame = frame
        if decrypted_data:
            self.decrypted = True
            self.decrypted_dirs[d] = True
        plain_hs = list(hs_types)
        hs_records = cts.count(CT_HANDSHAKE)
        for ct in cts:
            if ct == CT_CCS:
                self.ccs.append({"frame": frame, "time": time, "dir": d})
                self.seen_ccs[d] = True
                self.messages.append({"frame": frame, "time": time, "dir": d, "message": "Change Cipher Spec"})
            elif ct == CT_HANDSHAKE:
                hs_records -= 1
                if plain_hs:
                    # one record may carry several messages: the last record takes what is left
                    take = len(plain_hs) if hs_records == 0 else 1
                    for t in plain_hs[:take]:
                        self._handshake(d, frame, time, t, f)
                    del plain_hs[:take]
                else:
                    if self.seen_ccs[d]:  # (TLS 1.2: the Finished after CCS; without keys not readable)
                        self.finished.append({"frame": frame, "time": time, "dir": d, "encrypted": True,
                                              "decrypted": False})
                    self.messages.append({"frame": frame, "time": time, "dir": d,
                                          "message": "Encrypted Handshake Message"})
            elif ct == CT_APPDATA:
                self.first_app.setdefault(d, time)
            elif ct == CT_ALERT:
                desc = f["tls.alert_message.desc"]
                if desc:
                    with contextlib.suppress(ValueError):
                        self.alert = ALERTS.get(int(desc[0], 0), desc[0])
                self.messages.append({"frame": frame, "time": time, "dir": d, "message": "Alert"
                                      + (f" ({self.alert})" if self.alert else " (encrypted)")})
        for t in plain_hs:
            self._handshake(d, frame, time, t, f)

    def _handshake(self, d: str, frame: int, time: float, t: int, f: dict[str, list[str]]) -> None:
        # (the TLS pass gives the fields of frames with messages 1, 2, 8, 11 and 12, and alerts,
        # only: reading them for another message needs that message in its tap's filter, tshark.py)
        name = HANDSHAKE.get(t, f"Handshake type {t}")
        self.messages.append({"frame": frame, "time": time, "dir": d, "message": name})
        if t == 1 and self.client_hello is None:
            names = f["tls.handshake.extensions_server_name"]
            self.sni = names[0] if names else None
            self.alpn_offered = list(f["tls.handshake.extensions_alpn_str"])
            self.client_hello = {
                "frame": frame, "time": time,
                "version": _version((f["tls.handshake.version"] or [""])[0]),
                "cipher_suites": [name_of("tls.handshake.ciphersuite", v) for v in f["tls.handshake.ciphersuite"]],
                "supported_versions": [_version(v) for v in f["tls.handshake.extensions.supported_version"]],
                "supported_groups": [name_of("tls.handshake.extensions_supported_group", v)
                                     for v in f["tls.handshake.extensions_supported_group"]],
                "signature_algorithms": [sig_name(v) for v in f["tls.handshake.sig_hash_alg"]],
                "key_share_groups": [name_of("tls.handshake.extensions_supported_group", v)
                                     for v in f["tls.handshake.extensions_key_share_group"]],
                "sni": self.sni, "alpn": self.alpn_offered,
                "random": _first(f["tls.handshake.random"]),
            }
        elif t == 2 and self.server_hello is None:
            suites = f["tls.handshake.ciphersuite"]
            sv = f["tls.handshake.extensions.supported_version"]
            ks = f["tls.handshake.extensions_key_share_group"]
            self.server_hello = {
                "frame": frame, "time": time,
                "version": _version(sv[0]) if sv else _version((f["tls.handshake.version"] or [""])[0]),
                "cipher_suite": name_of("tls.handshake.ciphersuite", suites[0]) if suites else None,
                "cipher_suite_id": suites[0] if suites else None,
                "key_share_group": name_of("tls.handshake.extensions_supported_group", ks[0]) if ks else None,
                "random": _first(f["tls.handshake.random"]),
            }
            if f["tls.handshake.extensions_alpn_str"]:
                self.alpn_chosen = f["tls.handshake.extensions_alpn_str"][0]
        elif t == 8 and f["tls.handshake.extensions_alpn_str"] and not self.alpn_chosen:
            self.alpn_chosen = f["tls.handshake.extensions_alpn_str"][0]
        elif t == 11 and not self.chain:
            for der in f["tls.handshake.certificate"][:8]:
                cert = certificate(der)
                if cert:
                    self.chain.append(cert)
        elif t == 12 and self.ske is None:
            curve = f["tls.handshake.server_named_curve"]
            # the Server Key Exchange's signature algorithm comes first in its frame (a Certificate
            # Request after it lists the client's choices; TLS 1.0/1.1 have neither)
            sig = f["tls.handshake.sig_hash_alg"]
            self.ske = {"frame": frame, "time": time,
                        "curve": name_of("tls.handshake.extensions_supported_group", curve[0]) if curve else None,
                        "public_key": _first(f["tls.handshake.server_point"]),
                        "signature_algorithm": sig_name(sig[0]) if sig else None}
        elif t == 20:
            # read in clear: decrypted with the key log (Finished is always sent under the new keys)
            self.finished.append({"frame": frame, "time": time, "dir": d, "encrypted": True, "decrypted": True})

    def result(self) -> dict[str, Any] | None:
        if self.client_hello is None and self.server_hello is None and not self.messages:
            return None
        sh = self.server_hello or {}
        version = sh.get("version")
        suite = sh.get("cipher_suite")
        cert = self.chain[0] if self.chain else None
        # post-handshake messages (tickets, key updates) and alerts are no part of the round trips
        hs = [m for m in self.messages
              if not m["message"].startswith("Alert") and m["message"] not in ("New Session Ticket", "Key Update")]
        round_trips = 0
        prev = None
        for m in hs:
            if prev == "C" and m["dir"] == "S":
                round_trips += 1
            prev = m["dir"]
        duration = (hs[-1]["time"] - hs[0]["time"]) if len(hs) > 1 else 0.0
        return {
            "version": version,
            "cipher_suite": suite,
            "cipher_suite_id": sh.get("cipher_suite_id"),
            "suite_parts": suite_parts(suite, key_share=sh.get("key_share_group"), cert=cert) if suite else None,
            "sni": self.sni,
            "alpn": self.alpn_offered,
            "alpn_chosen": self.alpn_chosen,
            "client_hello": self.client_hello,
            "server_hello": self.server_hello,
            "server_key_exchange": self.ske,
            "certificate": cert,
            "chain": self.chain,
            "certificate_visible": bool(self.chain),
            "messages": self.messages[:200],
            "change_cipher_spec": self.ccs,
            "finished": self.finished,
            "round_trips": round_trips,
            "handshake_duration": round(duration, 6),
            "decrypted": self.decrypted,
            "decrypted_dirs": dict(self.decrypted_dirs),
            "unreadable": dict(self.unreadable),
            "alert": self.alert,
        }
