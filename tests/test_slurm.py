"""examples/slurm.sbatch: valid shell, every command it runs exists here (Slurm's own allow-listed),
and a dry run with stand-ins for Slurm and Ray starts the cluster the way Ray's Slurm guide does."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "examples" / "slurm.sbatch"
SLURM = {"srun", "scontrol", "sbatch", "scancel"}  # on the cluster, not here
KEYWORDS = {
    "if",
    "then",
    "else",
    "elif",
    "fi",
    "while",
    "until",
    "do",
    "done",
    "in",
    "{",
    "}",
    "!",
    "[[",
    "]]",
}
CONTROL = {";", "&", "&&", "||", "|", "(", "<(", ")", ";;", "|&"}
HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")


def _logical_lines(text: str) -> list[str]:
    """Lines with continuations joined and here-document bodies left out."""
    out, buf, end = [], "", None
    for line in text.splitlines():
        if end is not None:
            end = None if line.strip() == end else end
            continue
        buf += line[:-1] + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            out.append(buf)
            m = HEREDOC.search(buf)
            end = m.group(1) if m else None
            buf = ""
    return out


def commands_run(text: str) -> tuple[set[str], set[str]]:
    """(commands the script runs, functions it defines); what srun runs counts as a command too."""
    found: set[str] = set()
    functions = set(re.findall(r"^\s*(\w+)\s*\(\)", text, re.MULTILINE))
    for line in _logical_lines(text):
        lex = shlex.shlex(line, posix=True, punctuation_chars=True)
        lex.whitespace_split = True
        tokens, expect, i = list(lex), True, 0
        while i < len(tokens):
            t = tokens[i]
            if t == "((":  # arithmetic
                i = tokens.index("))", i) if "))" in tokens[i:] else len(tokens)
            elif t in CONTROL:
                expect = True
            elif t == "for":
                i = tokens.index("do", i) if "do" in tokens[i:] else len(tokens)
                expect = True
            elif t in (">", ">>", "<", "2>", ">&"):
                i += 0 if i + 1 < len(tokens) and tokens[i + 1] in CONTROL else 1  # its target (a file)
            elif expect and (t in KEYWORDS or re.match(r"^\w+=", t)):
                pass
            elif expect:
                found.add(t)
                expect = False
                if t == "srun":  # srun OPTIONS COMMAND: the template writes options as --opt=value
                    while i + 1 < len(tokens) and tokens[i + 1].startswith("-"):
                        i += 1
                    expect = True
            i += 1
    return found, functions


def _is_builtin(name: str) -> bool:
    out = subprocess.run(["bash", "-c", f"type -t {shlex.quote(name)}"], capture_output=True, text=True)
    return out.stdout.strip() in ("builtin", "keyword")


def test_template_is_valid_shell():
    out = subprocess.run(["bash", "-n", str(TEMPLATE)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def test_every_command_exists_here():
    found, functions = commands_run(TEMPLATE.read_text())
    assert {"srun", "scontrol", "ray", "vizsweep", "python"} <= found, found  # the parser sees them
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    missing = [
        c for c in sorted(found - SLURM - functions) if not _is_builtin(c) and not shutil.which(c, path=path)
    ]
    assert not missing, f"commands the template runs that this environment lacks: {missing}"
    import importlib.util

    assert importlib.util.find_spec("orchestrator.raywait") is not None  # python -m orchestrator.raywait


def test_parser_catches_an_unknown_command():
    found, _ = commands_run(
        "x=$(scontrol show hostnames | no-such-tool -q)\nsrun --nodes=1 ray-nope start &\n"
    )
    assert {"scontrol", "no-such-tool", "ray-nope"} <= found


def _stub(folder: Path, name: str, body: str) -> None:
    p = folder / name
    p.write_text(f"#!/bin/bash\n{body}\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR)


@pytest.mark.parametrize(("args", "expect"), [(["spec.yaml"], "vizsweep launch spec.yaml"),
                                              (["resume", "q-1", "--store", "s"], "vizsweep resume q-1 --store s")])  # fmt: skip
def test_dry_run_starts_head_then_workers_then_the_driver(tmp_path, args, expect):
    stubs, venv, log = tmp_path / "stubs", tmp_path / "venv", tmp_path / "calls.log"
    stubs.mkdir()
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("")
    record = f'echo "$(basename "$0") $*" >> {shlex.quote(str(log))}'
    _stub(stubs, "scontrol", "printf 'n1\\nn2\\nn3\\n'")
    _stub(stubs, "srun", f'{record}\nwhile [[ $1 == -* ]]; do shift; done\nexec "$@"')
    _stub(stubs, "hostname", "echo 'fe80::1 10.0.0.7'")
    _stub(stubs, "ray", record)
    _stub(stubs, "python", record)
    _stub(stubs, "vizsweep", f'{record}\necho "RAY_ADDRESS=$RAY_ADDRESS" >> {shlex.quote(str(log))}')
    env = {"PATH": f"{stubs}{os.pathsep}{os.environ['PATH']}", "VIZSWEEP_VENV": str(venv),
           "SLURM_JOB_NODELIST": "n[1-3]", "SLURM_SUBMIT_DIR": str(tmp_path), "SLURM_CPUS_PER_TASK": "8",
           "SLURM_GPUS_PER_TASK": "1"}  # fmt: skip
    out = subprocess.run(["bash", str(TEMPLATE), *args], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    calls = log.read_text().splitlines()
    starts = [c for c in calls if c.startswith("ray start")]
    head = [c for c in starts if "--head" in c]  # background steps: they log in any order
    assert head == [
        "ray start --head --node-ip-address=10.0.0.7 --port=6379 --num-cpus=8 --num-gpus=1 --block"
    ]
    workers = [c for c in starts if c not in head]
    assert workers == ["ray start --address=10.0.0.7:6379 --num-cpus=8 --num-gpus=1 --block"] * 2
    assert [c for c in calls if c.startswith("srun")].count("srun --nodes=1 --ntasks=1 --nodelist=n2 ray start "
           "--address=10.0.0.7:6379 --num-cpus=8 --num-gpus=1 --block") == 1  # fmt: skip
    waits = [c for c in calls if c.startswith("python")]
    assert waits == [
        "python -m orchestrator.raywait 1 --timeout 600",
        "python -m orchestrator.raywait 3 --timeout 600",
    ]
    assert calls.index(waits[0]) < min(
        i for i, c in enumerate(calls) if c in workers
    )  # workers after the head is up
    # the driver after the last wait, joined to the cluster (the background ray stubs may log in between)
    assert expect in calls and calls.index(expect) > calls.index(waits[1])
    assert "RAY_ADDRESS=10.0.0.7:6379" in calls


@pytest.mark.slow
def test_raywait_counts_nodes_and_times_out(ray_local, monkeypatch):
    from orchestrator.raywait import wait_for_nodes

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert wait_for_nodes(1, timeout=60) == 1
    with pytest.raises(TimeoutError, match="1 of 2 Ray nodes"):
        wait_for_nodes(2, timeout=0.5, poll_s=0.1)
