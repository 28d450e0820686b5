"""Every fixed text of the report, in Chinese and English: one catalogue, not the templates.

Templates only ever print ``t.<key>``; the context gets the dictionary for one language, and
the Jinja environment is strict, so a key missing here fails the render instead of printing
nothing. ``{n}``-style fields are filled with :func:`fmt` in the context builder.
"""

from __future__ import annotations

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
    "step_line": ("{kind} 会话：{server}，端口 {port}，安全方式 {security}",
                  "{kind} session with {server}, port {port}, security {security}"),
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
    "truncated": ("只显示前 {shown} 条，共 {total} 条；完整记录见附录。",
                  "Only the first {shown} of {total} lines are shown; the appendix has all of them."),
    "tls": ("TLS 握手", "TLS handshake"),
    "tab_tls": ("TLS 握手参数（{server}）", "TLS handshake parameters ({server})"),
    "tls_intro": ("该会话使用 TLS，握手参数见{ref}。", "This session used TLS; {ref} lists the handshake."),
    "tls_version": ("协议版本", "Version"),
    "tls_cipher_suite": ("密码套件", "Cipher suite"),
    "tls_sni": ("服务器名称 (SNI)", "Server name (SNI)"),
    "tls_alpn": ("ALPN", "ALPN"),
    "tls_key_exchange": ("密钥交换", "Key exchange"),
    "tls_group": ("密钥交换组", "Key exchange group"),
    "tls_certificate": ("服务器证书", "Server certificate"),
    "tls_cert_subject": ("证书主体", "Certificate subject"),
    "tls_cert_issuer": ("证书颁发者", "Certificate issuer"),
    "tls_cert_not_after": ("证书有效期至", "Certificate valid until"),
    "tls_cert_sha256": ("证书 SHA-256 指纹", "Certificate SHA-256 fingerprint"),
    "tls_client_side": ("（客户端收到）", " (as received by the client)"),
    "tls_handshake_messages": ("握手消息", "Handshake messages"),
    "tls_cert_encrypted": ("TLS 1.3 中证书被加密，被动抓包看不到",
                           "encrypted in TLS 1.3, not visible to a passive capture"),
    "mail": ("邮件摘要", "Mail summary"),
    "tab_mail": ("邮件摘要（帧 {frame}）", "Mail summary (frame {frame})"),
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
    "timing_intro": ("{ref}为每条命令到服务器应答的时间。",
                     "{ref} shows how long the server took to answer each command."),
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
    "app_no_transcript": ("会话记录（transcript.json）未生成。", "No session record (transcript.json) was written."),
    "app_captures": ("抓包文件", "Capture files"),
    "app_captures_intro": (
        "抓包文件为 pcapng 格式，TLS 密钥日志已嵌入文件（Decryption Secrets Block），"
        "用 Wireshark 直接打开即可看到解密后的内容，无需额外设置。",
        "The captures are pcapng files with the TLS key log embedded (Decryption Secrets Block): "
        "Wireshark opens them decrypted with no extra settings."),
    "app_open_with": ("打开方式", "Open with"),
    "col_file": ("文件", "File"),
    "col_size": ("大小（字节）", "Size (bytes)"),
    "col_sha256": ("SHA-256", "SHA-256"),
    "col_check": ("校验", "Check"),
    "check_ok": ("一致", "matches"),
    "check_bad": ("不一致：文件已被修改", "MISMATCH: the file has changed"),
    "check_mode": ("权限为 {mode}，应为 0600（chmod 600）", "mode {mode}, should be 0600 (chmod 600)"),
    "check_missing": ("文件不存在", "file missing"),
    "check_unknown": ("未记录", "not recorded"),
    "credentials_warning_title": ("注意：抓包文件包含明文凭据", "Warning: the capture files contain credentials"),
    "credentials_warning": (
        "明文 SMTP/POP3/IMAP 会话中的 AUTH 登录信息（用户名和密码/授权码的 Base64）以及解密 TLS 所需的"
        "密钥都保存在抓包文件中。这些文件以 0600 权限保存，只有你自己可以读取。不要分享、上传或提交这些文件；"
        "本报告中已隐去所有密码。",
        "The AUTH exchanges of the plaintext SMTP/POP3/IMAP sessions (user name and password or "
        "authorization code in base64) and the keys that decrypt the TLS sessions are stored in the "
        "capture files. They are kept with mode 0600, readable by you only. Do not share, upload or "
        "hand in these files; every password has been removed from this report."),
    "app_tools": ("工具版本", "Tool versions"),
    "tab_tools": ("所用工具版本", "Versions of the tools used"),
    "col_where": ("位置", "Where"),
    "where_target": ("目标主机", "target host"),
    "where_local": ("本地", "local"),
    "generated_by": ("由 labrunner {version} 根据运行 {run} 生成", "Generated by labrunner {version} from run {run}"),
    "redacted": ("«已隐去»", "«redacted»"),
}


def catalogue(lang: str) -> dict[str, str]:
    """The messages of one language."""
    index = LANGS.index(lang)
    return {key: pair[index] for key, pair in MESSAGES.items()}


def fmt(template: str, **fields: object) -> str:
    return template.format(**fields)
