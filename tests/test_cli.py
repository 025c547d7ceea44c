"""The installed ``starmd`` console script and its error convention."""

import subprocess
import sys

from openmm_starmd import __version__
from openmm_starmd.cli import build_parser


def test_console_script_is_installed_and_lists_commands():
    result = subprocess.run([sys.executable, "-m", "openmm_starmd.cli", "--help"], capture_output=True, text=True,
                            check=True)
    for command in ("prepare", "md"):
        assert command in result.stdout
    version = subprocess.run(["starmd", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in version.stdout


def test_user_error_is_one_line_with_exit_2(tmp_path):
    result = subprocess.run(["starmd", "prepare", str(tmp_path / "nope.pdb"), "-o", str(tmp_path / "o.pdb")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"starmd: error: input file {tmp_path / 'nope.pdb'} does not "
                                                  "exist: check the path"]
    assert "Traceback" not in result.stderr


def test_every_subcommand_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, subparser in sub.choices.items():
        assert subparser.format_help().startswith("usage: starmd " + name)
