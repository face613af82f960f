"""Container images built for real with podman and run as a container would, without a
container runtime.

Building: ``podman build --isolation chroot`` works on machines that refuse a runtime its
``setrlimit(RLIMIT_NPROC)``. A Dockerfile's ``FROM`` names a registry these machines cannot
reach, so ``--from`` replaces it with a local Debian made by ``debootstrap`` from Debian's
packages and imported with ``podman import``. The host's CA bundle is mounted into the build,
so pip reaches the package index as the host does.

Running: ``podman run`` needs that runtime, so a built image is exported once to a directory
(``podman create`` + ``podman export``) and every container gets an overlay of it (a fresh
upper dir: nothing of one container is seen by the next), its own mount and PID namespaces
(``unshare --pid --fork --mount-proc``), the image's ``USER``, ``WORKDIR``, ``ENV`` and
``ENTRYPOINT``. The network is the host's: a server on 127.0.0.1 is reachable inside.

Everything slow is cached under ``~/.cache/spot-agent-tests`` (``$XDG_CACHE_HOME``) and in
podman's own image store, keyed by what it is built from, and built once under a file lock
(each xdist worker asks for it): the Debian bases by suite and package list, the exported
images by a hash of their Dockerfile and build contexts. ``SPOT_AGENT_TEST_DEBIAN_MIRROR``
names another Debian mirror for debootstrap (``http://deb.debian.org/debian`` by default).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
#: bump to rebuild every cached base and image (a change of how they are made)
RECIPE_VERSION = "1"
#: exported images kept per name (older ones are removed when a new one is built)
KEEP_EXPORTS = 2
#: what `.ci/run` installs (and a developer runs) where a tool is missing
APT_LINE = "apt-get update -q && apt-get install -y -q podman debootstrap"


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    path = Path(root) / "spot-agent-tests"
    path.mkdir(parents=True, exist_ok=True)
    return path


def missing_tools() -> str | None:
    """Why images cannot be built and run here, or None when they can."""
    for tool in ("podman", "debootstrap", "unshare", "tar"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (as root: {APT_LINE})"
    if os.geteuid() != 0:
        return "building and running images needs root (debootstrap, mounts, namespaces)"
    return None


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    with open(cache_dir() / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(cmd: Sequence[str], *, log: Path | None = None, **kwargs: object) -> None:
    """Run a build step; on failure, raise with the end of its output."""
    out = subprocess.run(
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs
    )
    if log is not None:
        with log.open("a") as f:
            f.write(f"$ {' '.join(cmd)}\n{out.stdout}\n")
    if out.returncode != 0:
        tail = "\n".join(out.stdout.splitlines()[-30:])
        raise RuntimeError(f"{' '.join(cmd[:3])}... exited {out.returncode}:\n{tail}")


def _image_exists(ref: str) -> bool:
    return subprocess.run(["podman", "image", "exists", ref]).returncode == 0


# ---------------------------------------------------------------------------------------
# Debian bases
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DebianBase:
    """A Debian rootfs made by debootstrap, imported as a local podman image.

    ``python_image_like``: make it equivalent to the official ``python`` image for pip,
    which installs into the image's Python: Debian marks its system Python as externally
    managed (PEP 668, ``/usr/lib/python3.*/EXTERNALLY-MANAGED``) and pip refuses to install
    there; the official image's Python (in ``/usr/local``) has no such marker, so the
    marker is removed. Without it, the base is a distribution image as a job author's
    would be (pip refuses, ``python3 -m venv`` works).
    """

    suite: str
    packages: tuple[str, ...]
    python_image_like: bool

    @property
    def key(self) -> str:
        text = json.dumps([RECIPE_VERSION, self.suite, self.packages, self.python_image_like])
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def ref(self) -> str:
        return f"localhost/spot-agent-test-debian:{self.suite}-{self.key}"

    def ensure(self) -> str:
        """The image reference, built on first use (a minute: debootstrap downloads ~60 MB)."""
        with _locked(f"debian-{self.suite}"):
            if not _image_exists(self.ref):
                self._build()
        return self.ref

    def _build(self) -> None:
        mirror = os.environ.get("SPOT_AGENT_TEST_DEBIAN_MIRROR", DEBIAN_MIRROR)
        prefix = f"debootstrap-{self.suite}-"
        for stale in cache_dir().glob(f"{prefix}*"):  # of a run killed while it built
            shutil.rmtree(stale, ignore_errors=True)
        with tempfile.TemporaryDirectory(dir=cache_dir(), prefix=prefix) as tmp:
            rootfs = Path(tmp) / "rootfs"
            log = Path(tmp) / "log"
            include = ",".join(self.packages)
            cmd = ["debootstrap", "--variant=minbase", f"--include={include}"]
            _run([*cmd, self.suite, str(rootfs), mirror], log=log)
            if self.python_image_like:
                for marker in rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
                    marker.unlink()
            shutil.rmtree(rootfs / "var/cache/apt/archives", ignore_errors=True)
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            try:
                _run(["podman", "import", "-", self.ref], stdin=tar.stdout)
            finally:
                assert tar.stdout is not None
                tar.stdout.close()
                tar.wait()


#: like python:3.x-slim-bookworm: Debian 12's Python 3.11 with pip and venv, pip allowed
BOOKWORM_PYTHON = DebianBase(
    "bookworm", ("python3", "python3-pip", "python3-venv", "ca-certificates"), True
)
#: a distribution image with Python 3.11, as a job's might be: venv, no pip into the system
BOOKWORM_DISTRO = DebianBase("bookworm", ("python3", "python3-venv", "ca-certificates"), False)
#: a job image with an older Python: Debian 11's 3.9
BULLSEYE_DISTRO = DebianBase("bullseye", ("python3",), False)


# ---------------------------------------------------------------------------------------
# Built images, exported to a directory
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Image:
    """A built image's filesystem and the configuration a runtime applies to it."""

    rootfs: Path
    user: str
    env: dict[str, str]
    workdir: str
    entrypoint: list[str]
    cmd: list[str]


#: what of the repository goes into an image (the rest of it does not change one)
REPO_SOURCES = ("pyproject.toml", "README.md", "entrypoint.sh", "agent", "checkpoint")


def _tree_digest(h: hashlib._Hash, root: Path, only: Sequence[str] | None) -> None:
    """The content of ``root`` (or of its paths ``only``), without caches or VCS metadata."""
    for top in [root / name for name in only] if only is not None else [root]:
        if top.is_file():
            h.update(f"{top.relative_to(root)}\0".encode() + top.read_bytes() + b"\0")
        else:
            _walk_digest(h, root, top)


def _walk_digest(h: hashlib._Hash, root: Path, top: Path) -> None:
    skip = {".git", "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in skip and not d.endswith(".egg-info"))
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.suffix == ".pyc":
                continue
            h.update(str(path.relative_to(root)).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")


def build_image(
    name: str,
    dockerfile: Path,
    context: Path,
    base: DebianBase,
    build_contexts: Mapping[str, Path] | None = None,
) -> Image:
    """Build ``dockerfile`` with its first ``FROM`` replaced by ``base``; export it once per
    content (cached across runs), and return the export. Of a context that is the
    repository, only :data:`REPO_SOURCES` count for the cache (what the recipes copy)."""
    contexts = dict(build_contexts or {})
    h = hashlib.sha256(f"{RECIPE_VERSION}\0{base.key}\0".encode())
    h.update(dockerfile.read_bytes())
    for label, path in [("", context), *sorted(contexts.items())]:
        h.update(f"\0context {label}\0".encode())
        _tree_digest(h, path, REPO_SOURCES if path.resolve() == REPO else None)
    exports = cache_dir() / "images"
    target = exports / f"{name}-{h.hexdigest()[:16]}"
    with _locked(f"image-{name}"):
        if not (target / "config.json").exists():
            base_ref = base.ensure()
            exports.mkdir(exist_ok=True)
            _build_and_export(target, dockerfile, context, base_ref, contexts)
            _prune(exports, name, keep=target)
    config = json.loads((target / "config.json").read_text())
    env = dict(item.split("=", 1) for item in config.get("Env") or [])
    return Image(
        rootfs=target / "rootfs",
        user=config.get("User") or "0",
        env=env,
        workdir=config.get("WorkingDir") or "/",
        entrypoint=list(config.get("Entrypoint") or []),
        cmd=list(config.get("Cmd") or []),
    )


def _build_and_export(
    target: Path, dockerfile: Path, context: Path, base_ref: str, contexts: Mapping[str, Path]
) -> None:
    tag = f"localhost/spot-agent-test-build:{target.name}"
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "rootfs").mkdir(parents=True)
    build = ["podman", "build", "--isolation", "chroot", "--from", base_ref, "--pull=never"]
    build += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro", "-f", str(dockerfile), "-t", tag]
    for label, path in sorted(contexts.items()):
        build += ["--build-context", f"{label}={path}"]
    _run([*build, str(context)], log=partial / "build.log")
    try:
        out = subprocess.run(
            ["podman", "image", "inspect", tag, "--format", "{{json .Config}}"],
            capture_output=True,
            text=True,
            check=True,
        )
        # a command for `create` to accept an image without CMD or ENTRYPOINT; none runs
        container = subprocess.run(
            ["podman", "create", tag, "true"], capture_output=True, text=True, check=True
        ).stdout.strip()
        try:
            export = subprocess.Popen(["podman", "export", container], stdout=subprocess.PIPE)
            try:
                _run(["tar", "-C", str(partial / "rootfs"), "-x"], stdin=export.stdout)
            finally:
                assert export.stdout is not None
                export.stdout.close()
                export.wait()
        finally:
            subprocess.run(["podman", "rm", container], capture_output=True)
    finally:
        subprocess.run(["podman", "rmi", tag], capture_output=True)
    (partial / "config.json").write_text(out.stdout)
    partial.rename(target)


def _prune(exports: Path, name: str, keep: Path) -> None:
    others = sorted(
        (p for p in exports.glob(f"{name}-*") if p != keep and p.is_dir()),
        key=lambda p: p.stat().st_mtime,
        reverse=True,
    )
    for old in others[KEEP_EXPORTS - 1 :]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------

#: the agent's PID 1 in the container: the one child of `unshare --fork`
_UNSHARE_CHILD_WAIT = 30.0


class Container:
    """One container of an image: an overlay over its exported filesystem (fresh: ``upper``
    starts empty), PID 1 its ``ENTRYPOINT`` + command (its ``CMD`` when none is given), as
    the image's user, in its workdir, with its ``ENV`` plus ``env``; stdout and stderr go
    to files."""

    def __init__(
        self,
        image: Image,
        workdir: Path,
        command: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        *,
        files: Mapping[str, bytes] | None = None,
    ) -> None:
        self.image = image
        self.dir = workdir
        command = list(command) or image.cmd
        for sub in ("upper", "work", "merged"):
            (workdir / sub).mkdir(parents=True, exist_ok=False)
        for inside, data in (files or {}).items():  # files added to the container's layer
            path = workdir / "upper" / inside.lstrip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            path.chmod(0o755)
        self.out_path = workdir / "stdout"
        self.err_path = workdir / "stderr"
        environ = {**image.env, **(env or {})}
        uid, _, gid = image.user.partition(":")
        merged = workdir / "merged"
        upper, work = workdir / "upper", workdir / "work"
        overlay = f"lowerdir={image.rootfs},upperdir={upper},workdir={work}"
        # PID 1 of the new namespace is this shell, which mounts the overlay and /proc and
        # then execs (no fork) into unshare --root, which execs the entrypoint: the
        # entrypoint is PID 1, as under a container runtime.
        setup = (
            'mount -t overlay overlay -o "$1" "$2" && mount -t proc proc "$2/proc" '
            '&& shift 2 && exec "$@"'
        )
        enter = ["unshare", f"--root={merged}", f"--wd={image.workdir}"]
        if uid not in ("", "0", "root"):
            enter += [f"--setuid={uid}", f"--setgid={gid or uid}"]
        argv = [
            "unshare", "--pid", "--fork", "--mount", "--propagation", "private",
            "sh", "-c", setup, "sh", overlay, str(merged),
            *enter, *image.entrypoint, *command,
        ]  # fmt: skip
        with self.out_path.open("w") as out, self.err_path.open("w") as err:
            self.proc = subprocess.Popen(
                argv, env=environ, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
        try:
            self.host_pid1 = self._find_pid1()
        except BaseException:
            self.proc.kill()  # unshare; its child, if any, dies with it (PID 1 of its ns)
            self.proc.wait(60)
            raise

    def _find_pid1(self) -> int:
        """The host's pid of the container's PID 1 (unshare's one child)."""
        deadline = time.monotonic() + _UNSHARE_CHILD_WAIT
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                pids = children.read_text().split()
                if pids:
                    return int(pids[0])
            if self.proc.poll() is not None:
                raise RuntimeError(f"the container ended at once: {self.stderr}")
            time.sleep(0.02)
        raise RuntimeError("unshare did not start the container's PID 1")

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def events(self, name: str) -> list[dict[str, object]]:
        found = []
        for line in self.stdout.splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == name:
                    found.append(record)
        return found

    def wait_for_line(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stdout:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"no {text!r} from the container\n{self.stdout}\n{self.stderr}"
                )
            time.sleep(0.05)

    def stop(self, timeout: float) -> int:
        """``docker stop -t timeout``: SIGTERM to PID 1, SIGKILL once ``timeout`` has passed;
        the container's exit status (128+N when killed by N)."""
        os.kill(self.host_pid1, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.host_pid1, signal.SIGKILL)
        return self.wait(60)

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout)
        return 128 - code if code < 0 else code

    def close(self) -> None:
        """Kill what is left (PID 1's end kills the namespace) and wait for unshare."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.host_pid1, signal.SIGKILL)
            self.proc.wait(60)
