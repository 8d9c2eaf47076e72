"""Run untrusted Python (a model's code and a tenant's tests) where it cannot hurt the host.

Each run is a separate process in a new session, in a throwaway directory, with a stripped environment and
resource limits (CPU, address space, processes, file size, open files) set before any untrusted line runs;
the whole process group is killed at the wall-clock limit. Isolation comes in one of two strengths:

- `namespaces` (root, or unprivileged user namespaces, with util-linux `unshare`): new network, mount and
  PID namespaces — no network interface but a downed loopback, every mount but the working directory
  read-only, no other process visible — and then a new user namespace, so the code holds no capability
  to undo any of it. The kernel exempts root from RLIMIT_NPROC, so as root a pids cgroup (v1 or v2, where
  writable) holds the process count instead.
- `guard` (no namespaces available): a Python audit hook refuses sockets, subprocesses, ctypes and writes
  outside the working directory. It stops ordinary Python code, not native code; prefer namespaces.
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NAMESPACES = "namespaces"
GUARD = "guard"

# Runs first in the sandboxed interpreter: lock the process down, then run the target script.
BOOT = r"""
import os, resource, sys
mode, cpu, memory, procs, fsize, nofile, cgroup, target = sys.argv[1:9]
here = os.getcwd()
if cgroup != "-":  # root is exempt from RLIMIT_NPROC; a pids cgroup bounds its processes instead
    with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
        f.write(str(os.getpid()))
if mode == "namespaces":
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_void_p]
    def mount(source, where, flags):
        if libc.mount(source, where, None, flags, None) != 0:
            raise OSError(ctypes.get_errno(), "sandbox: mount failed", where)
    # MS_REC|MS_PRIVATE, then the working directory as a mount of its own, then every other mount
    # read-only (keeping the flags a user namespace locks: nosuid, nodev, noexec, atime).
    mount(None, b"/", (1 << 14) | (1 << 18))
    mount(here.encode(), here.encode(), 4096)
    os.chdir(here)  # the old working directory still points into the mount about to turn read-only
    keep = {"nosuid": 2, "nodev": 4, "noexec": 8, "noatime": 1024, "nodiratime": 2048, "relatime": 1 << 21}
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4:6] for line in f]
    for point, options in mounts:
        point = point.encode().decode("unicode_escape").encode()
        if point != here.encode():
            flags = sum(keep.get(o, 0) for o in options.split(","))
            mount(None, point, 32 | 4096 | 1 | flags)  # MS_REMOUNT|MS_BIND|MS_RDONLY
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER: give up every capability over what was set up
        raise OSError(ctypes.get_errno(), "sandbox: unshare(CLONE_NEWUSER) failed")
    del ctypes, libc
limits = {"CPU": cpu, "AS": memory, "NPROC": procs, "FSIZE": fsize, "NOFILE": nofile, "CORE": 0}
for name, value in limits.items():
    # CPU: SIGXCPU at the limit (a catchable signal `unshare` passes on; SIGKILL it reports as exit 1).
    hard = int(value) + (name == "CPU")
    resource.setrlimit(getattr(resource, "RLIMIT_" + name), (int(value), hard))
if mode == "guard":
    def inside(path):
        if isinstance(path, int):
            return True
        path = os.path.realpath(os.fsdecode(path))
        return path == os.devnull or path.startswith(here + os.sep)
    refused = ("socket.", "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn",
               "os.fork", "ctypes.", "pty.spawn", "shutil.", "os.kill", "signal.pthread_kill")
    writes = ("os.remove", "os.rename", "os.mkdir", "os.rmdir", "os.symlink", "os.link", "os.truncate",
              "os.chmod", "os.chown", "os.utime", "os.chdir")
    def guard(event, args):
        if event.startswith(refused):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open" and args[0] is not None:
            mode, flags = args[1] or "", args[2] or 0
            writing = any(c in mode for c in "wax+") or flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            if writing and not inside(args[0]):
                raise PermissionError(f"sandbox: writing {args[0]!r} outside the working directory")
        elif event in writes and not all(inside(a) for a in args[:2] if isinstance(a, (str, bytes))):
            raise PermissionError(f"sandbox: {event} outside the working directory")
    sys.addaudithook(guard)
sys.path.insert(0, here)
sys.argv = [target]
exec(compile(open(target).read(), target, "exec"), {"__name__": "__main__"})
"""


@dataclass(frozen=True)
class Limits:
    """What one sandboxed run may use."""

    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_mb: int = 1024
    processes: int = 32
    file_mb: int = 16
    open_files: int = 64
    output_chars: int = 20_000


@dataclass(frozen=True)
class Run:
    """How a sandboxed run ended: exit status (negative: killed by that signal), its output (cut)."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool
    isolation: str


@functools.cache
def isolation() -> str:
    """`namespaces` when this host can run the full namespace setup (checked once per process by running
    a script through it), else `guard`."""
    if _unshare_command() is None:
        return GUARD
    with tempfile.TemporaryDirectory(prefix="tuneloop-probe-") as tmp:
        script = Path(tmp) / "probe.py"
        script.write_text("print('ok')\n")
        run = run_python(script, Path(tmp), Limits(), mode=NAMESPACES)
    return NAMESPACES if run.returncode == 0 and run.stdout.strip() == "ok" else GUARD


def _unshare_command() -> list[str] | None:
    """The util-linux `unshare` prefix for new net/mount/PID namespaces (and a user namespace when not
    root); None without the binary."""
    binary = shutil.which("unshare") or next(
        (p for p in ("/usr/bin/unshare", "/bin/unshare") if os.path.exists(p)), None
    )
    if binary is None:
        return None
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [binary, *user, "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]


def run_python(script: Path, workdir: Path, limits: Limits = Limits(), *, mode: str | None = None) -> Run:
    """Run `script` (a file inside `workdir`) sandboxed, with `workdir` as its only writable place.

    `mode` forces `guard` (tests use it to check the fallback); by default the strongest available."""
    mode = mode or isolation()
    cgroup = _new_pids_cgroup(limits.processes) if mode == NAMESPACES and os.geteuid() == 0 else None
    argv = [
        sys.executable,
        "-I",  # no PYTHON* variables, no user site, no script directory on sys.path
        "-B",
        "-c",
        BOOT,
        mode,
        str(limits.cpu_seconds),
        str(limits.memory_mb * 2**20),
        str(limits.processes),
        str(limits.file_mb * 2**20),
        str(limits.open_files),
        str(cgroup or "-"),
        str(script),
    ]
    if mode == NAMESPACES:
        argv = [*(_unshare_command() or []), *argv]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(workdir), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # Files, not pipes: RLIMIT_FSIZE caps what a flood of output can take.
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        timed_out = False
        try:
            proc.wait(timeout=limits.wall_seconds)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            _kill_group(proc.pid)  # whatever it left behind in its session goes too
            proc.wait()
            if cgroup is not None:
                _remove_cgroup(cgroup)
        return Run(proc.returncode, _read(out, limits), _read(err, limits), timed_out, mode)


def _new_pids_cgroup(limit: int) -> Path | None:
    """A fresh pids cgroup allowing `limit` processes (cgroup v1 `pids`, else v2 with pids enabled), or
    None where none can be made."""
    for root in (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup")):
        if not (root / "cgroup.procs").exists() or (root.name == "cgroup" and not _v2_pids(root)):
            continue
        group = root / f"tuneloop-sandbox-{secrets.token_hex(6)}"
        try:
            group.mkdir()
            (group / "pids.max").write_text(str(limit))
        except OSError:
            with contextlib.suppress(OSError):
                group.rmdir()
            continue
        return group
    return None


def _v2_pids(root: Path) -> bool:
    try:
        return "pids" in (root / "cgroup.subtree_control").read_text().split()
    except OSError:
        return False


def _remove_cgroup(group: Path) -> None:
    """rmdir the cgroup once its last process is gone (the kernel reaps a killed PID namespace quickly)."""
    for _ in range(50):
        try:
            group.rmdir()
            return
        except OSError:
            time.sleep(0.02)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def _read(file: object, limits: Limits) -> str:
    file.seek(0)  # type: ignore[attr-defined]
    return file.read(limits.output_chars).decode(errors="replace")  # type: ignore[attr-defined]


def new_token() -> str:
    """A marker for the line a sandboxed harness reports on, unlikely to appear in other output."""
    return "@@tuneloop-" + secrets.token_hex(8)
