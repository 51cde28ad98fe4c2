"""A one-node SLURM cluster on this machine for the ``slurm`` tests: Debian's slurm-wlm + munge, started by
hand (no systemd), talking only to localhost; stops only the daemons it started.

Needs root. Installs ``slurmctld slurmd slurm-client munge`` with apt when missing. The config goes to
``/etc/slurm/slurm.conf`` because the job-step plugin drops ``SLURM_CONF`` inside jobs; an existing config
that is not ours is never touched (the tests skip instead).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

CONF_DIR = Path("/etc/slurm")
MARKER = "# written by llm4brain tests/local_slurm.py"
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "munged"]


def _install() -> None:
    if all(shutil.which(b) or Path("/usr/sbin", b).exists() for b in BINARIES):
        return
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        pytest.skip("SLURM is not installed and installing it needs root and apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=True)
        subprocess.run(install, env=env, capture_output=True, check=True)


def _node_line() -> str:
    """This machine as ``slurmd -C`` sees it (a node line must not claim more), plus two GPU slots."""
    line = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    fields = dict(item.split("=", 1) for item in line.split())
    assert fields["NodeName"] == socket.gethostname().split(".")[0], "node name must equal hostname -s"
    return f"{line} Gres=gpu:2 State=UNKNOWN"


def _config(state: Path) -> str:
    node = _node_line()
    name = node.split()[0].split("=")[1]
    return f"""{MARKER}
ClusterName=llm4brain-test
SlurmctldHost={name}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
GresTypes=gpu
ReturnToService=2
MinJobAge=60
SlurmctldTimeout=30
SlurmdTimeout=30
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
StateSaveLocation={state}/ctld
SlurmdSpoolDir={state}/d
SlurmctldPidFile={state}/slurmctld.pid
SlurmdPidFile={state}/slurmd.pid
SlurmctldLogFile={state}/slurmctld.log
SlurmdLogFile={state}/slurmd.log
{node}
PartitionName=test Nodes={name} Default=YES MaxTime=INFINITE State=UP
"""


def _start(args: list[str], started: list[subprocess.Popen]) -> None:
    started.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))


def _munge_running() -> bool:
    return subprocess.run(["munge", "-n"], capture_output=True).returncode == 0


@contextlib.contextmanager
def local_slurm(state: Path) -> Iterator[None]:
    """Start munged (unless one answers), slurmctld and slurmd in the foreground; yield once the node is idle."""
    _install()
    if os.geteuid() != 0:
        pytest.skip("starting slurmd needs root")
    conf, gres = CONF_DIR / "slurm.conf", CONF_DIR / "gres.conf"
    for path in (conf, gres):
        if path.exists() and MARKER not in path.read_text():
            pytest.skip(f"{path} belongs to a real SLURM installation; not touching it")
    (state / "ctld").mkdir(parents=True, exist_ok=True)
    (state / "d").mkdir(exist_ok=True)
    CONF_DIR.mkdir(exist_ok=True)
    conf.write_text(_config(state))
    gres.write_text(
        f"{MARKER}\nAutoDetect=off\nName=gpu File=/dev/null\nName=gpu File=/dev/zero\n"
    )  # two stand-in GPUs
    started: list[subprocess.Popen] = []
    try:
        if not _munge_running():
            run_dir = Path("/run/munge")
            run_dir.mkdir(mode=0o711, exist_ok=True)
            shutil.chown(run_dir, "munge", "munge")
            os.chmod(run_dir, 0o711)
            key = Path("/etc/munge/munge.key")
            if not key.exists():
                subprocess.run(["mungekey", "--create"], check=True, capture_output=True)
            shutil.chown(key, "munge", "munge")
            os.chmod(key, 0o600)
            _start(["runuser", "-u", "munge", "--", "munged", "--foreground"], started)
            _wait(_munge_running, 20, "munged did not answer")
        _start(["slurmctld", "-D", "-i"], started)
        _start(["slurmd", "-D"], started)
        _wait(_node_idle, 60, f"node never became idle; see {state}/slurmctld.log and {state}/slurmd.log")
        yield
    finally:
        subprocess.run(["scancel", "--partition", "test"], capture_output=True)
        with contextlib.suppress(RuntimeError):
            _wait(lambda: not subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip(), 30, "")
        for proc in reversed(started):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        for path in (conf, gres):
            if path.exists() and MARKER in path.read_text():
                path.unlink()


def _node_idle() -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() in {"idle", "mixed"}


def _wait(check, seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.5)
