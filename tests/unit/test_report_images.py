"""Screenshots in the notes (issue 15): confined to the project folder, copied, embedded."""

from __future__ import annotations

from pathlib import Path

import pytest

from labrunner.errors import UsageError
from labrunner.report.images import check_images, copy_images, embed_images

PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d4944415478da63f8ffff3f0005fe02fea7d6a4b40000000049454e44ae426082")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "scenarios" / "shots").mkdir(parents=True)
    (tmp_path / "scenarios" / "shots" / "qq 设置.png").write_bytes(PNG)
    (tmp_path / "outside.png").write_bytes(PNG)
    return tmp_path


@pytest.mark.parametrize(("src", "says"), [
    ("shots/none.png", "image 'shots/none.png' not found (looked for "),
    ("/etc/hostname.png", "is an absolute path"),
    ("../../x.png", "is outside the project folder"),
    ("https://s2.loli.net/2022/06/06/WAPvTMgEO7DYlX9.png", "is not a local file"),
    ("shots/notes.txt", "not found"),
])
def test_an_image_that_cannot_be_shown_is_one_line_naming_the_note(project: Path, src: str, says: str) -> None:
    with pytest.raises(UsageError) as err:
        check_images(f"分析\n\n![截图]({src})\n", project / "scenarios", project, "plain-smtp.yaml: notes.zh")
    assert str(err.value).startswith(f"plain-smtp.yaml: notes.zh: image {src!r} ") and says in str(err.value)
    assert "\n" not in str(err.value) and err.value.hint


def test_a_symlink_out_of_the_project_is_refused(project: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    elsewhere = tmp_path_factory.mktemp("elsewhere") / "secret.png"
    elsewhere.write_bytes(PNG)
    (project / "scenarios" / "shots" / "link.png").symlink_to(elsewhere)
    with pytest.raises(UsageError, match="outside the project folder"):
        check_images("![x](shots/link.png)", project / "scenarios", project, "a.yaml: notes.zh")
    # a file of the project one folder up is fine: the project is lab.yaml's folder
    check_images("![x](../outside.png)", project / "scenarios", project, "a.yaml: notes.zh")


def test_images_are_copied_into_the_run_and_embedded(project: Path, tmp_path: Path) -> None:
    from labrunner.report.context import _markdown

    note = "看截图：\n\n![QQ 邮箱设置](<shots/qq 设置.png> \"设置\")\n\n再看一次 ![again](shots/qq%20设置.png)\n"
    dest = tmp_path / "run" / "plain-smtp"
    out = copy_images(note, project / "scenarios", project, dest, "plain-smtp.yaml: notes.zh")
    (copied,) = list((dest / "images").iterdir())
    assert copied.read_bytes() == PNG and copied.suffix == ".png"
    assert out.count(f"](images/{copied.name}") == 2 and "qq 设置" not in out.replace("QQ 邮箱设置", "")
    html = str(embed_images(_markdown(out), dest))
    assert html.count('<img src="data:image/png;base64,') == 2 and "images/" not in html
    # an image the run folder does not hold is left as it is (the PDF renderer fetches nothing outside)
    assert 'src="images/gone.png"' in str(embed_images(_markdown("![x](images/gone.png)"), dest))


def test_validate_names_a_missing_screenshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from labrunner import cli

    root = Path(__file__).resolve().parents[2]
    (tmp_path / "scenarios").mkdir()
    text = (root / "scenarios" / "plain-smtp.yaml").read_text(encoding="utf-8")
    text = text.replace("notes:\n  zh: |\n", "notes:\n  zh: |\n    ![设置](shots/qq.png)\n\n", 1)
    (tmp_path / "scenarios" / "plain-smtp.yaml").write_text(text, encoding="utf-8")
    (tmp_path / "lab.yaml").write_text("profiles:\n  sandbox: {from_sandbox: true}\n", encoding="utf-8")
    assert cli.main(["validate", "-c", str(tmp_path / "lab.yaml")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == (f"labrunner: error: plain-smtp.yaml: notes.zh: image 'shots/qq.png' not found "
                      f"(looked for {tmp_path / 'scenarios' / 'shots' / 'qq.png'})")
    (tmp_path / "scenarios" / "shots").mkdir()
    (tmp_path / "scenarios" / "shots" / "qq.png").write_bytes(PNG)
    assert cli.main(["validate", "-c", str(tmp_path / "lab.yaml")]) == 0
