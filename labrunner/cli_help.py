"""The command line's help in the user's language: Chinese where the locale is Chinese.

argparse prints the English help strings of labrunner/cli.py; with LANG (or LC_ALL,
LC_MESSAGES, LANGUAGE) set to a Chinese locale, `labrunner COMMAND --help` prints the Chinese
below instead (issue 15). A help string missing here stays English, so a new option is never
without help; tests/unit/test_cli_help.py checks that no entry here has gone stale.
"""

from __future__ import annotations

import argparse
import os

HELP_ZH: dict[str, str] = {
    "show this help message and exit": "显示本帮助并退出",
    "show program's version number and exit": "显示版本号并退出",
    "show the Python traceback of an error (accepted anywhere on the line)":
        "出错时显示 Python 调用栈（可写在命令行的任何位置）",
    "the lab file, before or after the command (default: ./lab.yaml, or $LABRUNNER_CONFIG)":
        "实验配置文件，可写在子命令之前或之后（默认：./lab.yaml，或 $LABRUNNER_CONFIG）",
    "check lab.yaml and every scenario file; print each problem": "检查 lab.yaml 和每个场景文件，逐条列出问题",
    "show the scenarios, their titles and their latest result": "列出各场景、标题和最近一次的结果",
    "run the experiment: every scenario (or those named), then the report":
        "运行实验：所有场景（或指定的场景），然后生成报告",
    "render report.html and report.pdf again from a finished run (offline)":
        "根据已完成的运行重新生成 report.html 和 report.pdf（离线）",
    "start, stop or inspect the built-in practice lab (network namespaces; root)":
        "启动、停止或查看内置的练习环境（网络命名空间；需要 root）",
    "preflight: check everything a run needs, each problem with its fix":
        "运行前检查：逐项检查运行所需的一切，每个问题附修复方法",
    "analyse a capture (pcap/pcapng) with tshark: dialogues, TLS, statistics":
        "用 tshark 分析抓包文件（pcap/pcapng）：协议交互、TLS、统计",
    "the lab file (default: ./lab.yaml, or $LABRUNNER_CONFIG)":
        "实验配置文件（默认：./lab.yaml，或 $LABRUNNER_CONFIG）",
    "the profile whose files (the SSH key) are checked too (default: default_profile)":
        "同时检查该配置（profile）引用的文件，如 SSH 私钥（默认：default_profile）",
    "only these scenario names (default: all)": "只检查这些场景（默认：全部）",
    "print JSON for scripts": "输出 JSON，供脚本使用",
    "render a report whose sections come from different profiles, targets or sandbox instances "
    "(refused by default; each section says which run and profile produced it)":
        "允许生成各节来自不同环境配置（profile）、目标主机或沙箱实例的报告"
        "（默认拒绝；每节都会注明由哪次运行、哪个配置产生）",
    "put your own capture (Wireshark's pcap/pcapng, with the browser's SSLKEYLOGFILE) into the "
    "report as SCENARIO, instead of running its sessions; runs only the imported scenarios "
    "(and those named)":
        "把你自己的抓包（Wireshark 的 pcap/pcapng，附浏览器的 SSLKEYLOGFILE）作为场景 SCENARIO 放进报告，"
        "不运行该场景的会话；只运行导入的场景（以及指定的场景）",
    "Connect to the target once; for each scenario capture with tcpdump, run the mail/web sessions, stop, "
    "download and analyse; then render report.html and report.pdf.":
        "连接目标主机一次；对每个场景：用 tcpdump 抓包，运行邮件/网页会话，停止抓包，下载并分析；"
        "最后生成 report.html 和 report.pdf。",
    "re-run only these; the report reuses the latest successful result of the others":
        "只重新运行这些场景；报告沿用其他场景最近一次成功的结果",
    "profile of lab.yaml to use (default: default_profile, 'sandbox')":
        "使用 lab.yaml 中的哪个配置（默认：default_profile，即 sandbox）",
    "re-run what did not pass last time": "只重新运行上次没有通过的场景",
    "write report.html only": "只生成 report.html（不生成 PDF）",
    "language of the report (default: report.lang)": "报告语言：zh 中文或 en 英文（默认：report.lang）",
    "print the summary as JSON": "以 JSON 输出运行摘要",
    "teaching assistants: run on every target of lab.yaml's inventory, one report each":
        "助教用：在 lab.yaml 的 inventory 中每台目标主机上运行，每人一份报告",
    "with --inventory: how many targets at once (default 4)": "与 --inventory 一起用：同时运行几台目标主机（默认 4）",
    "Render the report from a run folder's files only: no host, no network.":
        "只根据运行目录中的文件生成报告：不连接主机，不需要网络。",
    "a run id or run folder (default: output/latest, the newest run)":
        "运行编号或运行目录（默认：output/latest，即最近一次运行）",
    "language of the report (default: the run's); the other language is written beside it, as "
    "report.en.html/report.en.pdf":
        "报告语言：zh 或 en（默认：运行时的语言）；另一种语言写到 report.en.html / report.en.pdf，不覆盖原报告",
    "a folder of templates that override the built-in ones (default: report.templates)":
        "用来覆盖内置模板的模板目录（默认：report.templates）",
    "The sandbox lab: a target host `ecs` (OpenSSH) and a mail provider `mail` (Postfix, Dovecot, nginx) in "
    "network namespaces on this machine.":
        "沙箱练习环境：在本机的网络命名空间中运行目标主机 ecs（OpenSSH）和邮件服务商 mail（Postfix、Dovecot、nginx）。",
    "up: start it, or keep it as it runs (--targets N with another N rebuilds it); down: remove everything it "
    "made; status: what runs where":
        "up：启动（已在运行则保持；--targets N 与当前不同则重建）；down：删除它创建的一切；status：查看运行状态",
    "instance name, 1-8 of a-z0-9 (default: $LABRUNNER_SANDBOX_INSTANCE or `lab`)":
        "实例名，1-8 个 a-z0-9 字符（默认：$LABRUNNER_SANDBOX_INSTANCE 或 lab）",
    "up: N target hosts ecs, ecs2 ... ecsN, each with its own mail account student, student2 ... (a class for "
    "--inventory; default: as many as run now, else 1)":
        "up：N 台目标主机 ecs、ecs2 …… ecsN，各有自己的邮箱账号 student、student2 ……"
        "（供 --inventory 模拟一个班；默认：与当前运行的相同，否则 1）",
    "print JSON for scripts (up: the state, secrets hidden)": "输出 JSON，供脚本使用（up：输出状态，隐去密码）",
    "Check this machine (tshark, editcap, WeasyPrint, CJK fonts) and the target (SSH and its host key, "
    "tcpdump and the right to capture, DNS, every server port the scenarios use, one login to each mail "
    "service with the account's password and the server certificate checked against ca_file, clock).":
        "检查本机（tshark、editcap、WeasyPrint、中文字体）和目标主机（SSH 及其主机密钥、tcpdump 及抓包权限、DNS、"
        "各场景用到的每个服务器端口，用账号密码（授权码）登录每个邮件服务一次并用 ca_file 验证服务器证书，时钟）。",
    "profile of lab.yaml to check (default: default_profile)": "要检查的 lab.yaml 配置（默认：default_profile）",
    "check this machine only": "只检查本机",
    "Annotated SMTP/POP3/IMAP/HTTPS dialogues, TLS handshakes and TCP statistics of any capture, frame numbers "
    "as Wireshark shows them (docs/analysis.md).":
        "任意抓包文件的 SMTP/POP3/IMAP/HTTPS 交互（带注释）、TLS 握手和 TCP 统计，帧号与 Wireshark 一致"
        "（docs/analysis.md）。",
    "a .pcap or .pcapng file (key log embedded or given with --keylog)":
        "pcap 或 pcapng 文件（密钥日志已嵌入，或用 --keylog 给出）",
    "TLS key log file (SSLKEYLOGFILE format) to decrypt TLS": "用于解密 TLS 的密钥日志文件（SSLKEYLOGFILE 格式）",
    "language of the explanations (default: zh, Chinese)": "说明文字的语言（默认：zh 中文）",
    "print the JSON document of docs/analysis.md": "输出 docs/analysis.md 所述的 JSON 文档",
    "do not redact passwords and AUTH data (never for a report you share)":
        "不隐去密码和 AUTH 数据（要分享的报告千万不要用）",
}


def chinese_locale(environ: dict[str, str] | None = None) -> bool:
    """Whether the user's locale is Chinese, as gettext decides it (LANGUAGE, LC_ALL, LC_MESSAGES, LANG)."""
    env = os.environ if environ is None else environ
    for name in ("LANGUAGE", "LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name)
        if value:
            return value.split(":")[0].lower().startswith("zh")
    return False


def localize_parser(parser: argparse.ArgumentParser, table: dict[str, str] = HELP_ZH) -> None:
    """Put the translations of ``table`` in place of the parser's help and descriptions, and
    its subcommands' (argparse has no catalogue of its own for them)."""
    if parser.description in table:
        parser.description = table[parser.description]
    for action in parser._actions:
        if isinstance(action.help, str) and action.help in table:
            action.help = table[action.help]
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                if isinstance(choice.help, str) and choice.help in table:
                    choice.help = table[choice.help]
            for sub in action.choices.values():
                localize_parser(sub, table)
