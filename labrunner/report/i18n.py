"""Every fixed text of the report, in Chinese and English: one catalogue, not the templates.

Templates only ever print ``t.<key>``; the context gets the dictionary for one language, and
the Jinja environment is strict, so a key missing here fails the render instead of printing
nothing. ``{n}``-style fields are filled with :func:`fmt` in the context builder.
"""

from __future__ import annotations

import re

LANGS = ("zh", "en")

# key: (zh, en)
MESSAGES: dict[str, tuple[str, str]] = {
    # cover and frame
    "report_title": ("实验报告", "Lab Report"),
    "school": ("学校", "School"),
    "course": ("课程", "Course"),
    "lab": ("实验", "Lab"),
    "student": ("姓名", "Student"),
    "student_id": ("学号", "Student ID"),
    "class": ("班级", "Class"),
    "date": ("日期", "Date"),
    "run_id": ("运行编号", "Run"),
    "profile": ("环境配置", "Profile"),
    "toc": ("目录", "Contents"),
    "page": ("页", "Page"),
    "not_captured": ("未捕获", "not captured"),
    "not_given": ("未填写", "not given"),
    "none": ("无", "none"),
    "colon": ("：", ": "),
    "figure": ("图", "Figure"),
    "table": ("表", "Table"),
    "fig_ref": ("图 {n}", "Figure {n}"),
    "tab_ref": ("表 {n}", "Table {n}"),
    # 1 objectives
    "sec_objectives": ("实验目的", "Objectives"),
    "objectives_from_scenarios": ("各实验项目的目的：", "The purpose of each experiment:"),
    # 2 environment
    "sec_environment": ("实验环境", "Experimental Environment"),
    "env_target": ("目标主机", "Target host"),
    "env_local": ("本地分析工具", "Local analysis tools"),
    "env_host": ("主机", "Host"),
    "env_hostname": ("主机名", "Host name"),
    "env_os": ("操作系统", "Operating system"),
    "env_kernel": ("内核", "Kernel"),
    "env_addresses": ("网络地址", "Addresses"),
    "env_tool": ("工具", "Tool"),
    "env_version": ("版本", "Version"),
    "tab_env_target": ("目标主机环境（运行时采集）", "Target host environment (collected during the run)"),
    "tab_env_local": ("本地工具版本", "Local tool versions"),
    "env_intro": ("以下信息在运行时从目标主机采集，见{ref}；本地分析所用工具见{ref2}。",
                  "The following was collected from the target host during the run ({ref}); "
                  "the local analysis tools are listed in {ref2}."),
    # 3 content
    "sec_content": ("实验内容", "Experimental Content"),
    "content_how": ("实施方式", "How"),
    "content_capture": ("抓包", "Capture"),
    "content_interface": ("接口", "interface"),
    "content_filter": ("过滤器", "filter"),
    "content_steps": ("会话步骤", "Sessions"),
    "lab_section": ("对应实验指导 {s}", "lab handout section {s}"),
    "step_line": ("{kind}：{server}，端口 {port}，{security}{negotiated}",
                  "{kind} with {server}, port {port}, {security}{negotiated}"),
    "step_kind_lines": ("逐行输入（telnet 方式）的会话", "Typed dialogue (telnet style)"),
    "step_kind_smtp": ("SMTP 会话", "SMTP session"),
    "step_kind_pop3": ("POP3 会话", "POP3 session"),
    "step_kind_imap": ("IMAP 会话", "IMAP session"),
    "step_kind_https": ("HTTPS 会话", "HTTPS session"),
    "step_kind_other": ("{kind} 会话", "{kind} session"),
    "security_plain": ("明文，不加密", "plain text, not encrypted"),
    "security_starttls": ("STARTTLS 升级为 TLS", "STARTTLS upgrade to TLS"),
    "security_tls": ("直接 TLS", "implicit TLS"),
    "step_negotiated": ("（协商为 {params}）", " (negotiated: {params})"),
    "step_negotiated_params": ("{version}，{cipher}", "{version}, {cipher}"),
    "step_negotiated_sep": ("；", "; "),
    "no_steps": ("会话记录未捕获", "session record not captured"),
    # 4 results
    "sec_results": ("实验结果与分析", "Results and Analysis"),
    "status": ("结果", "Result"),
    "status_passed": ("通过", "passed"),
    "status_failed": ("失败", "failed"),
    "status_interrupted": ("被中断", "interrupted"),
    "status_skipped": ("跳过", "skipped"),
    "status_running": ("未完成", "not finished"),
    "status_unknown": ("未知", "unknown"),
    "reused": ("（沿用运行 {run} 的结果）", "(result reused from run {run})"),
    "error": ("错误", "Error"),
    "hint": ("提示", "Hint"),
    "no_analysis": ("没有分析结果（analysis.json 未生成），本节只列出运行记录。",
                    "No analysis (analysis.json was not written); this section shows the run record only."),
    "bad_analysis": ("分析结果无法读取：{err}", "The analysis could not be read: {err}"),
    "no_streams": ("抓包中没有识别出会话流。", "No stream was found in the capture."),
    "stream": ("会话流", "Stream"),
    "stream_title": ("{protocol} 会话 {client} → {server}", "{protocol} session {client} → {server}"),
    "dialogue": ("协议交互过程", "Protocol dialogue"),
    "dialogue_intro": ("{ref}是从抓包中还原的命令与应答（C：客户端，S：服务器），右侧为说明；{ref2}为对应的时序图。",
                       "{ref} lists the commands and replies recovered from the capture (C: client, "
                       "S: server) with an explanation of each; {ref2} shows them as a sequence diagram."),
    "tab_dialogue": ("{protocol} 交互（{client} → {server}）", "{protocol} dialogue ({client} → {server})"),
    "col_frame": ("帧", "Frame"),
    "col_time": ("时间 (s)", "Time (s)"),
    "col_dir": ("方向", "Dir"),
    "col_text": ("内容", "Content"),
    "col_explanation": ("说明", "Explanation"),
    "fig_sequence": ("{protocol} 时序图（{client} → {server}）", "{protocol} sequence diagram ({client} → {server})"),
    "client": ("客户端", "Client"),
    "server": ("服务器", "Server"),
    "truncated": ("本表列出 {total} 条中的 {shown} 条（握手、认证、传输、退出等关键行全部保留），"
                  "完整记录见附录 {ref}。",
                  "{shown} of {total} lines are shown here (every handshake, login, transfer and quit line "
                  "is kept); Appendix {ref} has the full record."),
    "truncated_appendix": ("只列出前 {shown} 条，共 {total} 条。",
                           "Only the first {shown} of {total} lines are listed."),
    "lines_left_out": ("…… 此处省略 {n} 行（帧 {frames}），见附录 {ref}",
                       "… {n} more lines here (frames {frames}): see Appendix {ref}"),
    "lines_left_out_noframe": ("…… 此处省略 {n} 行，见附录 {ref}", "… {n} more lines here: see Appendix {ref}"),
    "arrows_left_out": ("⋯ 省略 {n} 行（帧 {frames}）", "⋯ {n} lines not drawn (frames {frames})"),
    "arrows_left_out_noframe": ("⋯ 省略 {n} 行", "⋯ {n} lines not drawn"),
    "tls_params": ("协商参数", "Negotiated"),
    "tls_params_same": ("与{ref} 相同：{version}，{suite}，{group}，客户端提供的版本与套件及服务器证书也相同",
                        "as in {ref}: {version}, {suite}, {group}; the client's offer and the server "
                        "certificate are the same too"),
    "tls_suite_same": ("见{ref}", "see {ref}"),
    "tls_cert_same": ("与{ref} 中的证书相同（{subject}，SHA-256 {sha}）",
                      "the same certificate as in {ref} ({subject}, SHA-256 {sha})"),
    "tab_stats_scenario": ("各连接的统计", "Statistics of each connection"),
    "col_connection": ("连接", "Connection"),
    "col_packets": ("数据包", "Packets"),
    "col_bytes": ("字节", "Bytes"),
    "col_payload": ("载荷字节 C / S", "Payload bytes C / S"),
    "col_tcp_problems": ("重传 / 重复 ACK / 乱序 / 丢失", "Retrans. / dup. ACK / out of order / lost"),
    "col_rtt": ("RTT 最小 / 平均 / 最大（毫秒）", "RTT min / avg / max (ms)"),
    "col_stream_duration": ("持续时间 (s)", "Duration (s)"),
    "stat_rtt_cell": ("{min} / {avg} / {max}（{n} 个样本）", "{min} / {avg} / {max} ({n} samples)"),
    "stats_intro": ("{ref}为本实验各连接的数据包、字节、TCP 异常和往返时间统计。",
                    "{ref} gives the packets, bytes, TCP anomalies and round-trip times of each connection."),
    "fig_timing_scenario": ("各命令的应答时间（编号为连接）", "Reply time of each command (numbered by connection)"),
    "bars_left_out": ("图中只画出 {total} 条中的前 {shown} 条。",
                      "The chart shows the first {shown} of {total} commands."),
    "more_chars": ("……（另有 {n} 个字符）", "… ({n} more characters)"),
    "rows_left_out": ("（另有 {n} 条未列出）", "({n} more entries left out)"),
    "more_lines": ("……（另有 {n} 行，见附录）", "… ({n} more lines in the appendix)"),
    "tls": ("TLS 握手", "TLS handshake"),
    "tab_tls": ("TLS 握手参数（{server}）", "TLS handshake parameters ({server})"),
    "tls_intro": ("该会话使用 TLS，握手参数见{ref}。", "This session used TLS; {ref} lists the handshake."),
    "tls_intro_figure": ("该会话使用 TLS，握手参数见{ref}，握手消息（按帧）见{ref2}中的灰色虚线箭头。",
                         "This session used TLS; {ref} lists the handshake parameters, and the grey dashed "
                         "arrows of {ref2} are its handshake messages, by frame."),
    "tls_version": ("协议版本", "Version"),
    "tls_cipher_suite": ("密码套件", "Cipher suite"),
    "tls_sni": ("服务器名称 (SNI)", "Server name (SNI)"),
    "tls_alpn": ("ALPN", "ALPN"),
    "tls_key_exchange": ("密钥交换", "Key exchange"),
    "tls_group": ("密钥交换组", "Key exchange group"),
    "tls_certificate": ("服务器证书", "Server certificate"),
    "tls_cert_subject": ("证书主体", "Certificate subject"),
    "tls_cert_issuer": ("证书颁发者", "Certificate issuer"),
    "tls_cert_validity": ("证书有效期", "Certificate validity"),
    "tls_cert_sans": ("证书备用名称 (SAN)", "Subject alternative names"),
    "tls_cert_key": ("证书公钥", "Certificate key"),
    "tls_suite_explained": ("套件含义", "What the suite means"),
    "tls_offered_versions": ("客户端提供的协议版本", "Versions the client offered"),
    "tls_offered_suites": ("Client Hello 中的密码套件（{n} 个，加粗者为服务器所选）",
                           "Cipher suites in the Client Hello ({n}; the server's choice in bold)"),
    "tls_offered_groups": ("客户端支持的密钥交换组（{n} 个，加粗者为所用）",
                           "Key exchange groups the client supports ({n}; the one used in bold)"),
    "tls_chosen": ("（选中）", " (chosen)"),
    "tls_round_trips": ("握手往返次数", "Handshake round trips"),
    "tls_handshake_time": ("握手用时", "Handshake time"),
    "tls_decrypted": ("已用密钥日志解密", "Decrypted with the key log"),
    "tls_alert": ("TLS 告警", "TLS alert"),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
    "n_bytes": ("{n} 字节", "{n} bytes"),
    "mail_cc": ("抄送", "Cc"),
    "mail_subject_raw": ("主题（编码前）", "Subject as encoded"),
    "mail_truncated": ("抓包中只有部分邮件", "Only part of the message is in the capture"),
    "stat_retransmissions": ("重传", "Retransmissions"),
    "stat_duplicate_acks": ("重复 ACK", "Duplicate ACKs"),
    "stat_out_of_order": ("乱序", "Out of order"),
    "stat_lost_segments": ("丢失的报文段", "Lost segments"),
    "stat_rtt": ("往返时间 RTT（毫秒）", "Round-trip time (ms)"),
    "stat_rtt_value": ("最小 {min} / 平均 {avg} / 最大 {max}（{n} 个样本）",
                       "min {min} / avg {avg} / max {max} ({n} samples)"),
    "dialogue_capped": ("分析只保留了前 2000 条交互；统计数据包含全部数据包。",
                        "The analysis kept the first 2000 dialogue entries; the statistics count everything."),
    "stream_notes": ("说明", "Notes"),
    "capture_notes": ("抓包说明", "About the capture"),
    "decryption": ("TLS 解密", "TLS decryption"),
    "decryption_embedded": ("密钥日志已嵌入抓包文件", "key log embedded in the capture"),
    "decryption_keylog": ("使用单独的密钥日志文件", "separate key log file"),
    "decryption_none": ("无密钥日志", "no key log"),
    "tls_cert_sha256": ("证书 SHA-256 指纹", "Certificate SHA-256 fingerprint"),
    "tls_client_side": ("（客户端收到）", " (as received by the client)"),
    "tls_cert_encrypted": ("TLS 1.3 中证书被加密，被动抓包看不到",
                           "encrypted in TLS 1.3, not visible to a passive capture"),
    "mail": ("邮件摘要", "Mail summary"),
    "tab_mail": ("邮件摘要（帧 {frame}）", "Mail summary (frame {frame})"),
    "tab_mails": ("邮件摘要（帧 {frame}）", "Mail summary (frames {frame})"),
    "mail_intro": ("传输的邮件见{ref}。", "{ref} summarises the message that was transferred."),
    "mail_from": ("发件人", "From"),
    "mail_to": ("收件人", "To"),
    "mail_subject": ("主题", "Subject"),
    "mail_date": ("日期", "Date"),
    "mail_message_id": ("Message-ID", "Message-ID"),
    "mail_size": ("大小（字节）", "Size (bytes)"),
    "mail_parts": ("MIME 部分", "MIME parts"),
    "mail_attachments": ("附件", "Attachments"),
    "mail_envelope_from": ("信封发件人", "Envelope sender"),
    "mail_envelope_to": ("信封收件人", "Envelope recipients"),
    "timings": ("时间统计", "Timings"),
    "bar_tls": ("[TLS 握手 + 问候]", "[TLS handshake + greeting]"),
    "timing_intro": ("{ref}为每条命令到服务器应答的时间，标签前的数字为连接编号。",
                     "{ref} shows how long the server took to answer each command; the number before "
                     "each label is the connection's."),
    "fig_timing": ("应答时间（{client} → {server}）", "Reply times ({client} → {server})"),
    "tab_stats": ("会话统计", "Session statistics"),
    "stat_frames": ("帧数", "Frames"),
    "stat_bytes": ("字节数", "Bytes"),
    "stat_duration": ("持续时间 (s)", "Duration (s)"),
    "stat_client_bytes": ("客户端发送字节", "Bytes from client"),
    "stat_server_bytes": ("服务器发送字节", "Bytes from server"),
    "stat_packets": ("数据包", "Packets"),
    "stat_scenario_duration": ("实验用时 (s)", "Scenario duration (s)"),
    "stat_capture_packets": ("抓到的数据包", "Packets captured"),
    "ms": ("毫秒", "ms"),
    "notes": ("学生分析与笔记", "Student's notes"),
    "no_notes": ("（未填写）", "(none written)"),
    # 5 conclusions
    "sec_conclusions": ("实验总结", "Conclusions"),
    "problems": ("遇到的问题与解决方法", "Problems and Solutions"),
    "no_problems": ("本次运行中所有实验项目一次通过，没有记录到失败或重试。",
                    "Every experiment passed on its first attempt in this run; no failure or retry was recorded."),
    "problem_failed_attempt": ("运行 {run} 中失败：{error}", "Failed in run {run}: {error}"),
    "problem_solved_by_retry": ("后来在运行 {run} 中重试通过。", "A later retry in run {run} passed."),
    "problem_unsolved": ("本报告生成时仍未解决。", "Still unresolved when this report was made."),
    "reflections": ("心得体会", "Reflections"),
    "summary_table": ("各实验项目结果", "Result of each experiment"),
    "col_scenario": ("实验项目", "Experiment"),
    "col_duration": ("用时 (s)", "Duration (s)"),
    "col_frames": ("帧数", "Frames"),
    # appendix
    "appendix": ("附录", "Appendix"),
    "app_transcripts": ("完整会话记录", "Full transcripts"),
    "app_transcript_of": ("{title}：客户端会话记录", "{title}: client-side session record"),
    "app_dialogue_of": ("{title}：抓包还原的完整交互", "{title}: full dialogue recovered from the capture"),
    "app_left_out": ("{ref}在第 4 章省略的 {n} 行（抓包还原，含帧号）：",
                     "The {n} lines of {ref} that section 4 left out, as the capture has them (with frames):"),
    "app_no_transcript": ("会话记录（transcript.json）未生成。", "No session record (transcript.json) was written."),
    "app_captures": ("抓包文件", "Capture files"),
    "app_captures_intro": (
        "抓包文件为 pcapng 格式。表中“TLS 解密”一栏为“密钥日志已嵌入抓包文件”的，TLS 密钥日志保存在文件内"
        "（Decryption Secrets Block），用 Wireshark 直接打开即可看到解密后的内容，无需额外设置。",
        "The captures are pcapng files. Where the table says the key log is embedded, the TLS key log is "
        "inside the file (a Decryption Secrets Block) and Wireshark opens it decrypted with no extra settings."),
    "app_open_with": ("打开方式", "Open with"),
    "app_evidence": ("PDF 附带的证据文件", "Evidence attached to this PDF"),
    "app_evidence_intro": (
        "本 PDF 以附件形式携带下列文件（在 PDF 阅读器的“附件”面板中打开）：运行清单、生成本报告所用的分析结果，"
        "以及脱敏后的抓包文件 sanitized.pcapng——其中所有凭据字节（密码、授权码、认证数据、Cookie）都已用"
        "等长的 X 覆盖，携带凭据的 TLS 会话不附密钥，其余 TLS 会话的密钥保留，因此可以放心提交。"
        "教师可运行 labrunner verify report.pdf 重新分析这些抓包，并与报告内容逐项核对。",
        "This PDF carries the files below as attachments (open the attachments panel of the PDF viewer): the "
        "run's manifest, the analyses this report was rendered from, and the sanitized captures "
        "sanitized.pcapng, in which every credential byte (password, authorization code, SASL data, cookies) "
        "is overwritten with the same number of X and a TLS session carrying a credential has no keys (the "
        "others keep theirs), so they are safe to hand in. A teaching assistant can run "
        "`labrunner verify report.pdf` to re-analyse the captures and compare them with the report."),
    "col_attachment": ("附件", "Attachment"),
    "col_content": ("内容", "Content"),
    "evidence_manifest": ("运行清单", "run manifest"),
    "evidence_analysis": ("分析结果（报告依据）", "analysis (what the report shows)"),
    "evidence_capture": ("脱敏抓包", "sanitized capture"),
    "col_file": ("文件", "File"),
    "col_size": ("大小（字节）", "Size (bytes)"),
    "col_sha256": ("SHA-256", "SHA-256"),
    "col_check": ("校验", "Check"),
    "check_ok": ("一致", "matches"),
    "check_bad": ("不一致：文件已被修改", "MISMATCH: the file has changed"),
    "check_mode": ("权限为 {mode}，应为 0600（chmod 600）", "mode {mode}, should be 0600 (chmod 600)"),
    "check_missing": ("文件不存在", "file missing"),
    "check_unknown": ("未记录", "not recorded"),
    "check_private": ("权限 0600，只有你自己可读", "mode 0600, readable by you only"),
    "keylog_note": ("TLS 会话密钥（抓包文件中也有一份），不要分享",
                    "TLS session keys (the capture embeds a copy): do not share"),
    "keylog_empty": ("空：本实验没有 TLS 连接", "empty: this experiment made no TLS connection"),
    "credentials_warning_title": ("注意：抓包文件包含明文凭据", "Warning: the capture files contain credentials"),
    "credentials_warning": (
        "明文 SMTP/POP3/IMAP 会话中的 AUTH 登录信息（用户名和密码/授权码的 Base64）以及解密 TLS 所需的"
        "密钥都保存在抓包文件中；这些密钥在每个实验目录的 keylog.txt 中还有一份（见下表）。"
        "这些文件以 0600 权限保存，只有你自己可以读取。不要分享、上传或提交这些文件，"
        "分享实验目录前要把抓包文件和 keylog.txt 都删掉；本报告中已隐去所有密码。",
        "The AUTH exchanges of the plaintext SMTP/POP3/IMAP sessions (user name and password or "
        "authorization code in base64) and the keys that decrypt the TLS sessions are stored in the "
        "capture files; each experiment's folder holds a second copy of those keys in keylog.txt (see the "
        "table). They are kept with mode 0600, readable by you only. Do not share, upload or hand in these "
        "files: before sharing a run folder, delete the captures and the keylog.txt files; every password "
        "has been removed from this report."),
    "app_tools": ("工具版本", "Tool versions"),
    "tab_tools": ("所用工具版本", "Versions of the tools used"),
    "col_where": ("位置", "Where"),
    "where_target": ("目标主机", "target host"),
    "where_local": ("本地", "local"),
    "generated_by": ("由 labrunner {version} 根据运行 {run} 生成", "Generated by labrunner {version} from run {run}"),
    "redacted": ("«已隐去»", "«redacted»"),
    # the client's own lines in its session record (labrunner/sessions): the English text is
    # exactly what the sessions write, so an English report prints them unchanged
    "tr_connecting": ("正在从目标主机连接 {where}", "connecting to {where} from the target"),
    "tr_connected": ("已连接到 {where}", "connected to {where}"),
    "tr_tls_starting": ("开始 TLS 握手（SNI {sni}）", "TLS handshake starting (SNI {sni})"),
    "tr_tls_done": ("TLS 握手完成：{params}", "TLS handshake done: {params}"),
    "tr_tls": ("TLS 握手：{params}", "TLS handshake: {params}"),
    "tr_closed": ("连接已关闭", "connection closed"),
    "tr_step_failed": ("步骤失败：{error}", "step failed: {error}"),
    "tr_redirect": ("{status} {reason}：跟随重定向到 {path}", "{status} {reason}: following the redirect to {path}"),
    "tr_no_apop": ("问候语中没有 APOP 时间戳：改用 USER/PASS 登录",
                   "the greeting has no APOP timestamp: logging in with USER/PASS"),
    "tr_not_yet": ("{mid} 尚未到达邮箱", "{mid} is not in the mailbox yet"),
    "tr_expected_reply": ("{phase}：收到实验预期的应答 {code}", "{phase}: got {code} as the scenario expects"),
    "tr_helo_fallback": ("EHLO 被拒绝：改用 HELO（没有 ESMTP 扩展）",
                         "EHLO refused: falling back to HELO (no ESMTP extensions)"),
    "tr_pipelining": ("PIPELINING：连续发送 MAIL、RCPT 和 DATA，不等待应答",
                      "PIPELINING: sending MAIL, RCPT and DATA without waiting"),
    "tr_no_pipelining": ("服务器不支持 PIPELINING：逐条发送命令",
                         "the server does not offer PIPELINING: sending commands one by one"),
    "tr_message_data": ("邮件数据，{size} 字节，{lines} 行：{mid}", "message data, {size} bytes, {lines} lines: {mid}"),
    "tr_headers": ("第 {n} 封邮件的头部，{size} 字节：{mid}", "headers of message {n}, {size} bytes: {mid}"),
    "tr_more_lines": ("…… 另有 {n} 行，共 {size} 字节", "… {n} more lines, {size} bytes in all"),
    "tr_body": ("正文，{size} 字节（{type}）", "body, {size} bytes ({type})"),
    "tr_literal": ("«IMAP 字面量，{size} 字节»", "«literal, {size} bytes»"),
    "tr_data_fragment": ("DATA 邮件内容，{size} 字节：{summary}", "DATA fragment, {size} bytes: {summary}"),
    "tr_no_message_id": ("无 Message-ID", "no Message-ID"),
    "tr_no_content_type": ("无内容类型", "no content type"),
}

# (direction, the whole line, message key). Notes ("*") are the client's own; the C and S
# entries are the few lines the client writes in place of a body it did not record line by line.
_CLIENT_LINES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple((d, re.compile(p), k) for d, p, k in (
    ("*", r"connecting to (?P<where>\S+) from the target", "tr_connecting"),
    ("*", r"connected to (?P<where>.+)", "tr_connected"),
    ("*", r"TLS handshake starting \(SNI (?P<sni>[^)]*)\)", "tr_tls_starting"),
    ("*", r"TLS handshake done: (?P<params>.+)", "tr_tls_done"),
    ("*", r"TLS handshake: (?P<params>.+)", "tr_tls"),
    ("*", r"connection closed", "tr_closed"),
    ("*", r"step failed: (?P<error>.+)", "tr_step_failed"),
    ("*", r"(?P<status>\d{3}) (?P<reason>.*): following the redirect to (?P<path>.+)", "tr_redirect"),
    ("*", r"the greeting has no APOP timestamp: logging in with USER/PASS", "tr_no_apop"),
    ("*", r"(?P<mid>.+) is not in the mailbox yet", "tr_not_yet"),
    ("*", r"(?P<phase>\S+): got (?P<code>\d+) as the scenario expects", "tr_expected_reply"),
    ("*", r"EHLO refused: falling back to HELO \(no ESMTP extensions\)", "tr_helo_fallback"),
    ("*", r"PIPELINING: sending MAIL, RCPT and DATA without waiting", "tr_pipelining"),
    ("*", r"the server does not offer PIPELINING: sending commands one by one", "tr_no_pipelining"),
    ("S", r"message data, (?P<size>\d+) bytes, (?P<lines>\d+) lines: (?P<mid>.*)", "tr_message_data"),
    ("S", r"headers of message (?P<n>\d+), (?P<size>\d+) bytes: (?P<mid>.*)", "tr_headers"),
    ("S", r"… (?P<n>\d+) more lines, (?P<size>\d+) bytes in all", "tr_more_lines"),
    ("S", r"body, (?P<size>\d+) bytes \((?P<type>.*)\)", "tr_body"),
    ("S", r"«literal, (?P<size>\d+) bytes»", "tr_literal"),
    ("C", r"DATA fragment, (?P<size>\d+) bytes: (?P<summary>.*)", "tr_data_fragment"),
))
_CLIENT_VALUES = {"no Message-ID": "tr_no_message_id", "no content type": "tr_no_content_type"}


def client_line(direction: str, text: str, t: dict[str, str]) -> str:
    """A line of the client's session record in the report's language: labrunner's own notes
    and summaries are translated, whatever the servers sent stays as it was."""
    for d, pattern, key in _CLIENT_LINES:
        m = pattern.fullmatch(text) if d == direction else None
        if m:
            fields = {k: t[_CLIENT_VALUES[v]] if v in _CLIENT_VALUES else v for k, v in m.groupdict().items()}
            return fmt(t[key], **fields)
    return text


def catalogue(lang: str) -> dict[str, str]:
    """The messages of one language."""
    index = LANGS.index(lang)
    return {key: pair[index] for key, pair in MESSAGES.items()}


def fmt(template: str, **fields: object) -> str:
    return template.format(**fields)
