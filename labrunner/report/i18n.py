"""Every fixed text of the report, in Chinese and English: one catalogue, not the templates.

Templates only ever print ``t.<key>``; the context gets the dictionary for one language, and
the Jinja environment is strict, so a key missing here fails the render instead of printing
nothing. ``{n}``-style fields are filled with :func:`fmt` in the context builder.
"""

from __future__ import annotations

import re

from labrunner.protocols import notes
from labrunner.report.transcript import Event

LANGS = ("zh", "en")

# key: (zh, en)
MESSAGES: dict[str, tuple[str, str]] = {
    # cover and frame
    "lang": ("zh", "en"),  # the catalogue's own language (for localize() of a recorded error)
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
    "env_intro": ("以下信息在运行时从目标主机采集，见{ref}；本地分析所用工具的版本见附录 F。",
                  "The following was collected from the target host during the run ({ref}); "
                  "the local analysis tools are listed in Appendix F."),
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
    "produced_by": ("运行 {run}，环境配置 {profile}", "run {run}, profile {profile}"),
    "produced_sandbox": ("{profile}（沙箱 {sandbox}）", "{profile} (sandbox {sandbox})"),
    "produced_built": ("{sandbox}，构建于 {built}", "{sandbox}, built {built}"),
    # a scenario made of the student's own capture (`import:` step, `run --import`)
    "imported": ("导入的抓包：{file}（学生自己抓取，SHA-256 {sha}…）{keylog}。没有运行会话，以下分析均来自该抓包。",
                 "Imported capture: {file} (made by the student, SHA-256 {sha}…){keylog}. No sessions were run: "
                 "the analysis below is of that capture."),
    "imported_keylog": ("，用浏览器的密钥日志 {file} 解密", ", decrypted with the browser's key log {file}"),
    "error": ("错误", "Error"),
    "hint": ("提示", "Hint"),
    "no_analysis": ("没有分析结果（analysis.json 未生成），本节只列出运行记录。",
                    "No analysis (analysis.json was not written); this section shows the run record only."),
    "bad_analysis": ("分析结果无法读取：{err}", "The analysis could not be read: {err}"),
    "outside_run": ("结果不在本运行目录中，未读取：{where}",
                    "the result is not in this run folder, so it was not read: {where}"),
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
    # the body/appendix split (issue 15): sections 3 and 4 follow the lab handout
    "handout_1": ("使用邮件客户端收发邮件", "Using a mail client to send and receive mail"),
    "handout_1_task": (
        "配置邮件用户代理（如 Outlook、Thunderbird），在本地撰写邮件并收取 QQ 邮箱中的邮件。",
        "Configure a mail user agent (Outlook, Thunderbird ...) to compose mail locally and receive the "
        "mail of your QQ Mail box."),
    "handout_2": ("本地收发邮件", "Sending and receiving mail locally"),
    "handout_2_task": (
        "用本地客户端撰写并发送邮件，同时用 Wireshark 抓包，分析其通信过程和协议。",
        "Compose and send mail with a local client while Wireshark captures, and analyse the "
        "communication and the protocols."),
    "handout_3": ("Web 邮件", "Web mail"),
    "handout_3_task": (
        "用浏览器登录 QQ 邮箱收发邮件，同时用 Wireshark 抓包，分析其通信过程和协议（TLS 握手）。",
        "Use a browser to log in to QQ Mail and send mail while Wireshark captures, and analyse the "
        "communication and the protocols (the TLS handshake)."),
    "handout_4": ("使用 telnet 收发邮件", "Sending mail with telnet"),
    "handout_4_task": (
        "用 telnet 命令登录 QQ 邮箱服务器，逐条输入 SMTP 命令发送邮件，同时抓包分析通信过程和协议。",
        "Log in to the QQ Mail server with telnet and send a mail by typing the SMTP commands, while "
        "capturing, and analyse the communication and the protocols."),
    "handout_extra": ("扩展实验（实验指导之外）", "Beyond the handout"),
    "handout_extra_task": ("实验指导之外的补充实验。", "Experiments the lab handout does not have."),
    "dialogue_intro_alone": ("{ref}是从抓包中还原的命令与应答（C：客户端，S：服务器），右侧为说明。",
                             "{ref} lists the commands and replies recovered from the capture (C: client, "
                             "S: server) with an explanation of each."),
    "stream_same_kind": ("该连接与“{where}”中的同类连接相同，此处不再列出，完整对话见附录 {ref}。",
                         "This connection is of the same kind as one shown in \u201c{where}\u201d: its full "
                         "dialogue is in Appendix {ref}."),
    "full_record": ("完整记录见附录 {ref}。", "The full record is in Appendix {ref}."),
    "tls_summary_line": ("TLS：{version}，{suite}，密钥交换组 {group}，服务器证书 {subject}（参数见{ref}）。",
                         "TLS: {version}, {suite}, key exchange group {group}, server certificate {subject} "
                         "(parameters in {ref})."),
    "app_tls": ("TLS 参数", "TLS parameters"),
    "app_tls_intro": ("下表列出本次实验的每个 TLS 连接；协商结果相同的连接共用一张参数表，只列出一次。",
                      "The table below lists every TLS connection of the run; connections that negotiated "
                      "the same parameters share one parameter table, printed once."),
    "tls_walk_where": ("（{dir}，{frames}）", " ({dir}, {frames})"),
    "tab_tls_connections": ("各 TLS 连接", "The TLS connections"),
    "col_version": ("版本", "Version"),
    "col_suite": ("密码套件", "Cipher suite"),
    "col_group": ("密钥交换组", "Group"),
    "col_sni": ("SNI", "SNI"),
    "col_round_trips": ("往返", "Round trips"),
    "col_handshake_ms": ("握手（毫秒）", "Handshake (ms)"),
    "col_params": ("参数表", "Parameters"),
    "app_mails": ("邮件摘要", "Mail summaries"),
    "app_stats": ("连接统计与应答时间", "Connection statistics and reply times"),
    "timing_in_html": ("各命令的应答时间图（图 {n}）见同一目录下的 report.html。",
                       "The chart of each command's reply time (Figure {n}) is in report.html, beside this PDF."),
    "app_filters": ("抓包接口与过滤器", "Capture interfaces and filters"),
    "tab_filters": ("各实验项目的抓包接口与 BPF 过滤器", "Capture interface and BPF filter of each experiment"),
    "problems_own": ("学生记录的问题", "The student's own account"),
    "problems_log": ("运行中自动记录的失败与重试", "Failures and retries recorded by the runs"),
    # the TLS 1.2 handshake, message by message (section 4.3 of the handout)
    "tls_walk": ("TLS 1.2 握手逐条分析", "The TLS 1.2 handshake, message by message"),
    "tls_walk_intro": (
        "以下按报文顺序分析“{stream}”的 TLS 1.2 握手（ECDHE_RSA 密钥交换），帧号与数值取自抓包；"
        "完整记录见附录 {ref}。",
        "The TLS 1.2 handshake (ECDHE_RSA key exchange) of \u201c{stream}\u201d, message by message; the frames "
        "and values are those of the capture, and Appendix {ref} has the full record."),
    "tls_walk_carries": ("携带", "Carries"),
    "tls_walk_why": ("作用", "Why"),
    "tls_walk_frames": ("帧 {frames}", "frame {frames}"),
    "tls_walk_not_seen": ("抓包中未见", "not in the capture"),
    "tls_walk_not_recorded": ("分析未记录", "not recorded by the analysis"),
    "tls_walk_client_random": ("客户端随机数", "Client random"),
    "tls_walk_server_random": ("服务器随机数", "Server random"),
    "tls_walk_ske_key": ("服务器临时公钥", "Server's ephemeral public key"),
    "tls_walk_dir_C": ("客户端 → 服务器", "client → server"),
    "tls_walk_dir_S": ("服务器 → 客户端", "server → client"),
    "tls_walk_dir_both": ("双向", "both ways"),
    "tls_walk_client_hello_carries": (
        "客户端随机数（32 字节）、会话 ID、客户端支持的 {n_suites} 个密码套件（{suites}）、压缩方法，以及扩展："
        "{extensions}；其中 SNI 为 {sni}，支持的密钥交换组为 {groups}，签名算法 {n_sigalgs} 个。",
        "the client random (32 bytes), a session ID, the {n_suites} cipher suites the client supports "
        "({suites}), the compression methods, and the extensions {extensions}: SNI {sni}, key exchange "
        "groups {groups}, {n_sigalgs} signature algorithms."),
    "tls_walk_client_hello_why": (
        "告诉服务器客户端能用哪些版本、套件和算法，由服务器从中选择；随机数参与后面的密钥计算，使每次会话的密钥"
        "都不同，防止重放；SNI 让同一 IP 上的服务器知道要出示哪个网站的证书。",
        "it tells the server which versions, suites and algorithms the client can use, for the server to "
        "choose from; the random enters the key computation so that every session has its own keys (no "
        "replay); the SNI tells a server hosting several sites which certificate to present."),
    "tls_walk_server_hello_carries": (
        "服务器随机数（32 字节）、会话 ID，以及服务器选定的协议版本 {version} 和密码套件 {suite} {suite_id}。",
        "the server random (32 bytes), a session ID, and the version {version} and cipher suite {suite} "
        "{suite_id} the server chose."),
    "tls_walk_server_hello_why": (
        "服务器从客户端的列表中选出双方都支持的套件：ECDHE 做密钥交换，RSA 做身份认证，AES_128_GCM 加密数据，"
        "SHA256 用于密钥派生；两个随机数都会参与主密钥的计算。",
        "the server picks, from the client's list, a suite both support: ECDHE for the key exchange, RSA "
        "for authentication, AES_128_GCM for the data, SHA256 for key derivation; both randoms go into the "
        "master secret."),
    "tls_walk_certificate_carries": (
        "服务器的证书链：主体 {subject}，颁发者 {issuer}，公钥 {key}，有效期至 {not_after}。",
        "the server's certificate chain: subject {subject}, issuer {issuer}, key {key}, valid until "
        "{not_after}."),
    "tls_walk_certificate_why": (
        "证明服务器的身份：客户端用信任的 CA 验证证书链，并检查证书中的名称与 SNI（{sni}）一致；"
        "证书中的 RSA 公钥用来验证下一条报文的签名。",
        "it proves the server's identity: the client checks the chain against the CAs it trusts and the "
        "name against the SNI ({sni}); the certificate's RSA key verifies the signature of the next message."),
    "tls_walk_ske_carries": (
        "ECDHE 参数：曲线 {curve}、服务器本次生成的临时公钥，以及用证书私钥对双方随机数和这些参数所做的签名"
        "（签名算法 {sigalg}）。",
        "the ECDHE parameters: the curve {curve}, the server's ephemeral public key for this session, and a "
        "signature over both randoms and these parameters made with the certificate's private key "
        "(signature algorithm {sigalg})."),
    "tls_walk_ske_why": (
        "临时密钥每次会话重新生成，即使以后证书私钥泄露，也无法解密本次抓包（前向安全）；签名保证这些参数"
        "确实来自证书的持有者，中间人无法替换。",
        "a fresh ephemeral key for every session means that even a later leak of the certificate's key "
        "cannot decrypt this capture (forward secrecy); the signature shows the parameters come from the "
        "certificate's owner, so a man in the middle cannot replace them."),
    "tls_walk_shd_carries": ("没有内容，只是一个标记。", "nothing: it is a marker."),
    "tls_walk_shd_why": ("告诉客户端服务器这一轮的握手消息已经发完，等待客户端的回应。",
                         "it tells the client that the server's part of this round is complete and it waits "
                         "for the client."),
    "tls_walk_cke_carries": ("客户端在曲线 {curve} 上生成的临时公钥。",
                             "the client's ephemeral public key on the curve {curve}."),
    "tls_walk_cke_why": (
        "双方各用自己的临时私钥和对方的公钥算出相同的预主密钥（pre-master secret），再与两个随机数一起派生出"
        "主密钥和会话密钥；密钥本身从不在网络上传输，抓包者无法算出。",
        "each side combines its own ephemeral private key with the other's public key into the same "
        "pre-master secret, and derives the master secret and session keys from it and the two randoms; "
        "no key ever crosses the network, so an eavesdropper cannot compute it."),
    "tls_walk_ccs_carries": ("1 个字节（值为 1）。", "one byte (the value 1)."),
    "tls_walk_ccs_why": ("通知对方：从下一条记录开始使用刚协商好的密钥和算法加密。",
                         "it tells the other side that the records after it are encrypted with the keys and "
                         "algorithms just negotiated."),
    "tls_walk_finished_carries": (
        "对此前全部握手消息计算出的校验值（verify_data，12 字节），已用新密钥加密——未解密时 Wireshark 显示为"
        "“Encrypted Handshake Message”。",
        "a check value over every handshake message so far (verify_data, 12 bytes), already encrypted "
        "with the new keys: undecrypted, Wireshark shows it as \u201cEncrypted Handshake Message\u201d."),
    "tls_walk_finished_why": ("双方确认握手消息没有被篡改、算出的密钥一致，握手到此完成。",
                              "both sides confirm that no handshake message was tampered with and that they "
                              "derived the same keys: the handshake is complete."),
    "tls_walk_ticket_carries": ("服务器加密保存的会话状态（会话票据）。", "the session state, encrypted by the server "
                                "(a session ticket)."),
    "tls_walk_ticket_why": ("客户端下次连接时出示票据即可恢复会话，省去完整握手。",
                            "the client can present it next time to resume the session without a full handshake."),
    "tls_walk_app_carries": (
        "加密后的 HTTP 报文；用密钥日志解密（{decrypted}）后可见请求“{request}”和响应“{response}”。",
        "the encrypted HTTP messages; decrypted with the key log ({decrypted}) they are the request "
        "\u201c{request}\u201d and the response \u201c{response}\u201d."),
    "tls_walk_app_why": (
        "应用数据用会话密钥以 AES_128_GCM 加密并认证：抓包者只能看到长度和时间，看不到内容，也无法篡改。",
        "the application data is encrypted and authenticated with AES_128_GCM under the session keys: an "
        "eavesdropper sees lengths and times only, and cannot alter it."),
    "tls_walk_13": ("与 TLS 1.3 的比较", "Compared with TLS 1.3"),
    "tls_walk_13_ske": ("没有 Server Key Exchange：密钥交换参数放在 Client Hello 和 Server Hello 的 key_share 扩展中。",
                        "No Server Key Exchange: the key exchange parameters travel in the key_share extension "
                        "of the Client Hello and Server Hello."),
    "tls_walk_13_cke": ("没有 Server Hello Done 和 Client Key Exchange：客户端在第一条报文中就发出了自己的公钥。",
                        "No Server Hello Done and no Client Key Exchange: the client sends its public key in "
                        "its first message."),
    "tls_walk_13_ccs": ("Change Cipher Spec 已无作用，只为兼容中间设备而保留一个空的。",
                        "Change Cipher Spec has no role left; an empty one is kept only for middleboxes."),
    "tls_walk_13_encrypted": (
        "Server Hello 之后的一切都加密：Encrypted Extensions、Certificate 和 Certificate Verify（代替 Server Key "
        "Exchange 的签名），被动抓包看不到服务器证书。",
        "Everything after the Server Hello is encrypted: Encrypted Extensions, Certificate and Certificate "
        "Verify (which replaces the Server Key Exchange's signature), so a passive capture does not see "
        "the certificate."),
    "tls_walk_13_rtt": ("握手只需 1 个往返（TLS 1.2 需要 2 个），客户端更早发送应用数据。",
                        "The handshake takes one round trip instead of two, so the client sends data sooner."),
    "tls_walk_13_suites": (
        "去掉了 RSA 密钥交换和非 AEAD 套件；套件名只含加密和哈希算法（如 TLS_AES_256_GCM_SHA384），"
        "密钥交换总是 (EC)DHE，前向安全是强制的。",
        "RSA key exchange and non-AEAD suites are gone; a suite names only the cipher and hash (such as "
        "TLS_AES_256_GCM_SHA384), the key exchange is always (EC)DHE, and forward secrecy is mandatory."),
    "tls_walk_13_seen": ("本次抓包中 {version} 的握手：{messages}（{rtt} 个往返）。",
                         "The {version} handshake of this capture: {messages} ({rtt} round trips)."),
    # appendix
    "appendix": ("附录", "Appendix"),
    "app_transcripts": ("完整会话记录", "Full transcripts"),
    "app_transcript_of": ("{title}：客户端会话记录", "{title}: client-side session record"),
    "app_dialogue_of": ("{title}：抓包还原的完整交互", "{title}: full dialogue recovered from the capture"),
    "mail_same": ("邮件摘要（帧 {frames}）：与{ref}相同。", "Mail summary (frames {frames}): the same as {ref}."),
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
    "check_outside": ("指向运行目录之外，未读取", "points outside the run folder: not read"),
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
}


def event_text(event: Event, lang: str) -> str:
    """An event of the client's session record (docs/transcript.md) in the report's language:
    labrunner's own notes, and the lines it writes in place of a body, are said from their key
    and fields (labrunner/protocols/notes.py); whatever the servers sent stays as it was.

    A run folder written before the notes had keys holds their English text only: the key and
    the fields are found in it again (notes.parse); a text that is no note stays as it is.
    """
    text = event.text
    found = (event.note, event.fields) if event.note is not None and event.fields is not None else \
        notes.parse(event.dir, text)
    if found is None:
        return text
    key, fields = found
    if isinstance(fields.get("error"), str):  # step failed: the error as the run recorded it (in English)
        fields = {**fields, "error": localize(fields["error"], lang) or ""}
    said = notes.say(key, fields, lang)
    return text if said is None else said


# Errors and hints the run recorded (in English, as the sessions and executors raise them),
# in the report's language: a Chinese report says them in Chinese (issue 15). (pattern, zh)
# with the pattern's groups filled into the Chinese; a text no pattern matches stays as it is.
_PORT25_ZH = ("阿里云 ECS 等云主机默认封禁出站 25 端口。明文 SMTP 实验（4.2、4.4）必须用 25 端口："
              "请在云服务商控制台申请 25 端口解封；其他实验可在场景中改用 security: tls（465 端口）"
              "或 security: starttls（587 端口）。")
_ERRORS: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(p, re.S), zh) for p, zh in (
    (r"SMTP (?P<host>\S+):25 cannot be reached from the target \((?P<why>.*)\), but port (?P<ports>.+) can: "
     r"outbound port 25 is blocked, probably by the cloud provider",
     "目标主机连不上 SMTP 服务器 {host} 的 25 端口（{why}），但 {ports} 端口可以连通："
     "出站 25 端口被封禁了，多半是云服务商所为"),
    (r"Alibaba Cloud ECS and most clouds block outbound port 25 by default.*", _PORT25_ZH),
    (r"cloud hosts such as Alibaba Cloud ECS block outbound port 25 by default.*", _PORT25_ZH),
    (r"(?P<where>.+): the server's certificate was not accepted: (?P<why>.+)",
     "{where}：服务器证书未通过验证：{why}"),
    (r"set ca_file in the profile to the CA that issued it.*",
     "在配置（profile）中把 ca_file 设为签发该证书的 CA 证书（沙箱会生成一个），或检查服务器主机名"),
    (r"(?P<where>.+): TLS handshake failed: (?P<why>.+)", "{where}：TLS 握手失败：{why}"),
    (r"(?P<where>\S+): connection refused", "{where}：连接被拒绝"),
    (r"(?P<where>\S+): no answer within (?P<s>\S+) s", "{where}：{s} 秒内没有应答"),
    (r"(?P<where>\S+): cannot connect: (?P<why>.+)", "{where}：无法连接：{why}"),
    (r"(?P<where>\S+): the host name cannot be resolved \((?P<why>.*)\)", "{where}：无法解析主机名（{why}）"),
    (r"no server listens there: check the server and port", "那里没有服务器在监听：请检查服务器地址和端口"),
    (r"check the address and the firewall rules", "请检查地址和防火墙规则"),
    (r"check the server host name in lab.yaml and DNS", "请检查 lab.yaml 中的服务器主机名和 DNS"),
    (r"(?P<where>.+): the server does not offer (?P<what>STARTTLS|STLS)(?P<rest>.*)",
     "{where}：服务器不支持 {what}{rest}"),
    (r"the scenario's time limit was reached before this step(?P<rest>.*)", "在这一步之前已到达实验的时间限制{rest}"),
    (r"(?P<where>.+): the server closed the connection after (?P<cmd>.+)", "{where}：服务器在 {cmd} 之后关闭了连接"),
    (r"(?P<where>.+): the connection broke while (?P<what>sending|reading) \((?P<why>.*)\)",
     "{where}：{what}时连接中断（{why}）"),
))
_ERROR_WORDS = {"sending": "发送", "reading": "读取"}


_LOCALIZE_MAX = 4096  # the longest error or hint labrunner records is far shorter


def localize(text: str | None, lang: str) -> str | None:
    """An error or hint the run recorded, in the report's language (see _ERRORS)."""
    if not text or lang != "zh" or len(text) > _LOCALIZE_MAX:
        return text  # (a longer text is none labrunner wrote: its patterns backtrack on it)
    for pattern, zh in _ERRORS:
        m = pattern.fullmatch(text)
        if m:
            fields = {k: _ERROR_WORDS.get(v, v) if k == "what" else v.replace(" and ", "、") if k == "ports" else v
                      for k, v in m.groupdict().items()}
            return zh.format(**fields)
    return text


def catalogue(lang: str) -> dict[str, str]:
    """The messages of one language."""
    index = LANGS.index(lang)
    return {key: pair[index] for key, pair in MESSAGES.items()}


def fmt(template: str, **fields: object) -> str:
    return template.format(**fields)
