#!/usr/bin/env python3
"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager.

Integration tests must meet the real API server (webhook admission, CEL validation, RBAC, CSRs,
token requests), not a fake. No image registry or release download is reachable here, so the
binaries are built once from the published Go modules and cached by version; see
docs/development.md, section "Test control plane".

CLI: ``build`` (ensure the binaries), ``up [--workdir DIR] [--keep]`` (run until Ctrl-C), ``paths``.
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from types import TracebackType
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KUBERNETES_VERSION = "v1.34.2"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.22.0"
PAUSE_VERSION = "1"  # bump when hack/go/pause/main.go changes

GO_TEMPLATES = Path(__file__).resolve().parent / "go"
MARKER = ".complete"
KUBE_COMMANDS = ("kube-apiserver", "kube-controller-manager", "kubectl")
NODE_COMMANDS = ("kubelet", "kube-scheduler")
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
READY_TIMEOUT = 60.0
STOP_GRACE = 5.0

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"[control-plane] {message}", file=sys.stderr, flush=True)


class BuildError(RuntimeError):
    """A Go build step failed; the message carries the command and the tail of its output."""


class ControlPlaneError(RuntimeError):
    """A component did not come up; the message carries the tail of every component's log."""


class KubectlError(subprocess.CalledProcessError):
    """CalledProcessError whose message includes kubectl's stderr, so test failures say why."""

    def __str__(self) -> str:
        return f"{super().__str__()}\n{self.stderr}"


@dataclass(frozen=True)
class Binaries:
    """Paths of the cached executables."""

    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    etcd: Path
    helm: Path

    def as_dict(self) -> dict[str, str]:
        return {field.name: str(getattr(self, field.name)) for field in fields(self)}


# --- building -------------------------------------------------------------------------------


def cache_root() -> Path:
    """``$BUDGETOPS_CACHE`` or ``~/.cache/budgetops``."""
    override = os.environ.get("BUDGETOPS_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "budgetops"


def _ldflags(variables: Mapping[str, str]) -> str:
    return " ".join(["-s", "-w", *(f"-X {name}={value}" for name, value in variables.items())])


def _go(*args: str, cwd: Path, log: Log, env: Mapping[str, str] | None = None) -> str:
    """Run one go command (static build, no cgo), log it with its duration, return stdout."""
    command = ["go", *args]
    shown = shlex.join(command)
    log(f"$ {shown if len(shown) < 160 else shown[:157] + '...'}")
    started = time.monotonic()
    result = subprocess.run(
        command,
        cwd=cwd,
        env={**os.environ, "CGO_ENABLED": "0", **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        raise BuildError(f"{shown}\nfailed with exit code {result.returncode} in {cwd}:\n{tail}")
    log(f"  took {time.monotonic() - started:.1f} s")
    return result.stdout


def _module_file(module: str, *, cwd: Path, log: Log) -> str:
    """The go.mod text of a published module version, fetched into the module cache."""
    info = json.loads(_go("mod", "download", "-json", module, cwd=cwd, log=log))
    return Path(info["GoMod"]).read_text()


def _kubernetes_module_edits(go_mod: str) -> list[str]:
    """``go mod edit`` flags pinning every staging module that k8s.io/kubernetes replaces locally.

    Its go.mod points them at ./staging, which only exists in its own repository; the same code is
    published as k8s.io/<name> v0.<minor>.<patch>. The go and godebug lines are copied so the
    binaries keep upstream's runtime defaults.
    """
    staging = re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/", go_mod, flags=re.MULTILINE)
    if not staging:
        raise BuildError("no staging replace lines found in k8s.io/kubernetes's go.mod")
    pin = "v0." + KUBERNETES_VERSION.split(".", 1)[1]
    directives = [f"-go={version}" for version in re.findall(r"^go (\S+)$", go_mod, re.MULTILINE)]
    directives += [f"-godebug={kv}" for kv in re.findall(r"^godebug (\S+)$", go_mod, re.MULTILINE)]
    return [
        *directives,
        f"-require=k8s.io/kubernetes@{KUBERNETES_VERSION}",
        *(f"-replace={name}={name}@{pin}" for name in staging),
    ]


def _build_kubernetes(
    module: Path, out: Path, log: Log, commands: Sequence[str] = KUBE_COMMANDS
) -> None:
    """``commands`` (by default the control plane's) from a throwaway module."""
    _go("mod", "init", "budgetops.local/kubernetes-tools", cwd=module, log=log)
    go_mod = _module_file(f"k8s.io/kubernetes@{KUBERNETES_VERSION}", cwd=module, log=log)
    _go("mod", "edit", *_kubernetes_module_edits(go_mod), cwd=module, log=log)
    shutil.copy(GO_TEMPLATES / "kubernetes" / "tools.go", module)
    _go("mod", "tidy", cwd=module, log=log)
    major, minor = KUBERNETES_VERSION.removeprefix("v").split(".")[:2]
    # Without these the binaries report v0.0.0-master and fail version checks (helm kubeVersion).
    version = {"gitVersion": KUBERNETES_VERSION, "gitMajor": major, "gitMinor": minor}
    flags = _ldflags(
        {
            f"{package}.{name}": value
            for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
            for name, value in version.items()
        }
    )
    for command in commands:
        package = f"k8s.io/kubernetes/cmd/{command}"
        _go(
            "build",
            "-trimpath",
            f"-ldflags={flags}",
            "-o",
            str(out / command),
            package,
            cwd=module,
            log=log,
        )


def _build_etcd(module: Path, out: Path, log: Log) -> None:
    """etcd from a one-file main package calling etcdmain.Main."""
    _go("mod", "init", "budgetops.local/etcd", cwd=module, log=log)
    shutil.copy(GO_TEMPLATES / "etcd" / "main.go", module)
    _go("mod", "edit", f"-require=go.etcd.io/etcd/server/v3@{ETCD_VERSION}", cwd=module, log=log)
    _go("mod", "tidy", cwd=module, log=log)
    _go("build", "-trimpath", "-ldflags=-s -w", "-o", str(out / "etcd"), ".", cwd=module, log=log)


def _build_helm(module: Path, out: Path, log: Log) -> None:
    """helm with the link flags of its own Makefile, so it reports its version, not ``v3.22``."""
    go_mod = _module_file(f"helm.sh/helm/v3@{HELM_VERSION}", cwd=module, log=log)
    client_go = re.search(r"^\s*k8s\.io/client-go v0\.(\d+)\.", go_mod, re.MULTILINE)
    if client_go is None:
        raise BuildError("k8s.io/client-go not found in helm's go.mod")
    kube = {"k8sVersionMajor": "1", "k8sVersionMinor": client_go.group(1)}
    variables = {"helm.sh/helm/v3/internal/version.version": HELM_VERSION}
    for package in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
        variables |= {f"{package}.{name}": value for name, value in kube.items()}
    _go(
        "install",
        "-trimpath",
        f"-ldflags={_ldflags(variables)}",
        f"helm.sh/helm/v3/cmd/helm@{HELM_VERSION}",
        cwd=module,
        log=log,
        env={"GOBIN": str(out)},
    )


@dataclass(frozen=True)
class _Component:
    """One cache directory: a versioned name, the executables in it and how to build them."""

    directory: str
    executables: tuple[str, ...]
    build: Callable[[Path, Path, Log], None]


COMPONENTS = (
    _Component(f"etcd-{ETCD_VERSION}", ("etcd",), _build_etcd),
    _Component(f"kubernetes-{KUBERNETES_VERSION}", KUBE_COMMANDS, _build_kubernetes),
    _Component(f"helm-{HELM_VERSION}", ("helm",), _build_helm),
)


def _build_pause(module: Path, out: Path, log: Log) -> None:
    """The pod sandbox's pause process, from hack/go/pause (standard library only)."""
    _go("mod", "init", "budgetops.local/pause", cwd=module, log=log)
    shutil.copy(GO_TEMPLATES / "pause" / "main.go", module)
    _go("build", "-trimpath", "-ldflags=-s -w", "-o", str(out / "pause"), ".", cwd=module, log=log)


# Apart from COMPONENTS so that tests needing no node never wait for (or miss) kubelet's build.
NODE_COMPONENTS = (
    _Component(
        f"kubernetes-node-{KUBERNETES_VERSION}",
        NODE_COMMANDS,
        lambda module, out, log: _build_kubernetes(module, out, log, NODE_COMMANDS),
    ),
    _Component(f"pause-{PAUSE_VERSION}", ("pause",), _build_pause),
)


def _binaries_in(root: Path) -> Binaries:
    paths = {
        name.replace("-", "_"): root / component.directory / name
        for component in COMPONENTS
        for name in component.executables
    }
    return Binaries(**paths)


def _complete(root: Path, component: _Component) -> bool:
    return (root / component.directory / MARKER).is_file()


def cached_binaries() -> Binaries | None:
    """The cached binaries if every component finished building, else None; never builds."""
    root = cache_root()
    return _binaries_in(root) if all(_complete(root, c) for c in COMPONENTS) else None


@contextlib.contextmanager
def _build_lock(root: Path) -> Iterator[None]:
    """Serialise builds, e.g. two test sessions starting at once on an empty cache."""
    with (root / ".lock").open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _ensure_component(component: _Component, *, root: Path, log: Log) -> None:
    """Build into a temporary sibling, mark it complete, then rename it into place atomically."""
    final = root / component.directory
    if _complete(root, component):
        log(f"{component.directory}: cached in {final}")
        return
    log(f"{component.directory}: building")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f".{component.directory}-", dir=root) as scratch:
        module, out = Path(scratch) / "module", Path(scratch) / "out"
        module.mkdir()
        out.mkdir()
        component.build(module, out, log)
        missing = [name for name in component.executables if not (out / name).is_file()]
        if missing:
            raise BuildError(f"{component.directory}: build produced no {', '.join(missing)}")
        seconds = round(time.monotonic() - started, 1)
        (out / MARKER).write_text(
            json.dumps({"built": datetime.now(UTC).isoformat(), "seconds": seconds}) + "\n"
        )
        shutil.rmtree(final, ignore_errors=True)  # an unmarked leftover from an older layout
        out.rename(final)
    log(f"{component.directory}: built in {seconds:.0f} s -> {final}")


def _ensure_components(components: Sequence[_Component], log: Log) -> Path:
    if shutil.which("go") is None:
        raise BuildError("the Go toolchain ('go') is not on PATH")
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with _build_lock(root):
        for component in components:
            _ensure_component(component, root=root, log=log)
    return root


def ensure_binaries(log: Log = _stderr) -> Binaries:
    """Build whatever is missing from the cache (idempotent) and return the paths."""
    return _binaries_in(_ensure_components(COMPONENTS, log))


def node_binaries(*, build: bool, log: Log = _stderr) -> dict[str, Path] | None:
    """kubelet, kube-scheduler and pause by name: built if ``build``, else cached or None."""
    root = _ensure_components(NODE_COMPONENTS, log) if build else cache_root()
    if not all(_complete(root, component) for component in NODE_COMPONENTS):
        return None
    return {
        name: root / component.directory / name
        for component in NODE_COMPONENTS
        for name in component.executables
    }


# --- certificates ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """Files of the throwaway PKI: one CA signs everything, plus service-account keys."""

    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    service_account_key: Path
    service_account_pub: Path


def _name(common_name: str, organization: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organization:
        attributes.insert(0, x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization))
    return x509.Name(attributes)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _sign(
    *,
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    extensions: Sequence[x509.ExtensionType],
) -> x509.Certificate:
    """A certificate valid for 30 days, self-signed when ``ca`` is None."""
    issuer_cert, issuer_key = ca if ca else (None, key)
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    for extension in extensions:
        critical = isinstance(extension, x509.BasicConstraints | x509.KeyUsage)
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.touch(mode=0o600)
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )


def _write_leaf(
    *,
    directory: Path,
    stem: str,
    subject: x509.Name,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    extensions: Sequence[x509.ExtensionType],
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _sign(
        subject=subject,
        key=key,
        ca=ca,
        extensions=[
            x509.BasicConstraints(ca=False, path_length=None),
            _key_usage(ca=False),
            *extensions,
        ],
    )
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    _write_key(key_path, key)
    return cert_path, key_path


def write_pki(directory: Path, address: str = "127.0.0.1") -> Pki:
    """CA, API server serving cert, admin client cert (system:masters), service-account keys.

    The serving cert names ``address`` (where clients reach the API server) besides loopback.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _sign(
        subject=_name("budgetops-test-ca"),
        key=ca_key,
        ca=None,
        extensions=[x509.BasicConstraints(ca=True, path_length=None), _key_usage(ca=True)],
    )
    (directory / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(directory / "ca.key", ca_key)
    names = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    addresses = sorted({IPv4Address("127.0.0.1"), IPv4Address("10.96.0.1"), IPv4Address(address)})
    san = x509.SubjectAlternativeName(
        [*(x509.DNSName(name) for name in names), *(x509.IPAddress(ip) for ip in addresses)]
    )
    serving = _write_leaf(
        directory=directory,
        stem="apiserver",
        subject=_name("kube-apiserver"),
        ca=(ca_cert, ca_key),
        extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), san],
    )
    admin = _write_leaf(
        directory=directory,
        stem="admin",
        subject=_name("admin", "system:masters"),
        ca=(ca_cert, ca_key),
        extensions=[x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])],
    )
    sa_key = ec.generate_private_key(ec.SECP256R1())
    _write_key(directory / "sa.key", sa_key)
    (directory / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=serving[0],
        serving_key=serving[1],
        admin_cert=admin[0],
        admin_key=admin[1],
        service_account_key=directory / "sa.key",
        service_account_pub=directory / "sa.pub",
    )


# --- processes ------------------------------------------------------------------------------


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (all sockets held open together so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _die_with_parent() -> list[str]:
    """A command prefix asking the kernel to SIGKILL the child when this process dies.

    atexit does not run on SIGKILL or an unhandled SIGTERM. The parent-death signal fires when
    the *thread* that forked exits, so it is only set when starting from the main thread.
    util-linux's setpriv sets it and then execs, so the PID stays the component's own.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "KILL", "--"]


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_GRACE seconds; always reaps."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _get_ok(url: str, *, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    """True if GET url answers 200; proxies from the environment are bypassed."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
    )
    try:
        with opener.open(urllib.request.Request(url, headers=headers), timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


_LIVE: set[ControlPlane] = set()


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager on 127.0.0.1, in a private workdir.

    Use as a context manager. Every process is stopped by PID on ``stop()``, at interpreter exit,
    and (when started from the main thread on Linux) by the kernel if this process is killed.
    ``address`` is where kube-apiserver listens and what it advertises: 127.0.0.1 unless a node
    must reach it (hack/node.py passes its own link address).
    """

    # Only what tests lean on: default ServiceAccounts, namespace deletion, ownerReference
    # cleanup, signing approved CSRs, and the kube-root-ca.crt ConfigMap in each namespace.
    CONTROLLERS: tuple[str, ...] = (
        "serviceaccount-controller",
        "serviceaccount-token-controller",
        "namespace-controller",
        "garbage-collector-controller",
        "certificatesigningrequest-signing-controller",
        "root-ca-certificate-publisher-controller",
    )

    def __init__(
        self,
        binaries: Binaries | None = None,
        *,
        workdir: Path | None = None,
        keep: bool = False,
        timeout: float = READY_TIMEOUT,
        log: Log = _stderr,
        address: str = "127.0.0.1",
    ) -> None:
        found = binaries or cached_binaries()
        if found is None:
            raise ControlPlaneError(
                "binaries are not built: run `python hack/control_plane.py build`"
            )
        self.binaries = found
        if workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="budgetops-cp-"))
        else:
            workdir.mkdir(parents=True, exist_ok=True)
            if any(workdir.iterdir()):
                raise ControlPlaneError(f"workdir {workdir} is not empty")
            self.workdir = workdir.resolve()
        self.keep = keep
        self.timeout = timeout
        self.address = address
        self._log = log
        self.kubeconfig = self.workdir / "kubeconfig"
        self.ca_file = self.workdir / "pki" / "ca.crt"
        self.token = secrets.token_urlsafe(32)
        self.server = ""
        self.pki: Pki | None = None
        self._processes: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start all three components and return once a fresh namespace would be usable."""
        if self._processes:
            raise ControlPlaneError("already started")
        _LIVE.add(self)
        started = time.monotonic()
        deadline = started + self.timeout
        try:
            self.pki = pki = write_pki(self.workdir / "pki", self.address)
            etcd_port, peer_port, api_port = _free_ports(3)
            self.server = f"https://{self.address}:{api_port}"
            self._write_credentials(pki)
            self._spawn("etcd", self._etcd_args(client=etcd_port, peer=peer_port))
            self._wait("etcd /health", f"http://127.0.0.1:{etcd_port}/health", deadline)
            etcd_ready = time.monotonic()
            self._spawn("kube-apiserver", self._apiserver_args(pki, etcd=etcd_port, port=api_port))
            self._wait("kube-apiserver /readyz", f"{self.server}/readyz", deadline)
            api_ready = time.monotonic()
            self._spawn("kube-controller-manager", self._controller_manager_args(pki))
            self._wait(
                "the default ServiceAccount",
                f"{self.server}/api/v1/namespaces/default/serviceaccounts/default",
                deadline,
            )
        except BaseException:
            self.stop()
            raise
        done = time.monotonic()
        self._log(
            f"ready at {self.server} in {done - started:.1f} s (etcd {etcd_ready - started:.1f} s,"
            f" apiserver +{api_ready - etcd_ready:.1f} s,"
            f" default ServiceAccount +{done - api_ready:.1f} s)"
        )

    def stop(self) -> None:
        """Stop every process (newest first), then delete the workdir unless ``keep``."""
        for name in reversed(list(self._processes)):
            _terminate(self._processes[name])
            del self._processes[name]
        _LIVE.discard(self)
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the cached kubectl against this control plane, capturing text output."""
        command = [str(self.binaries.kubectl), f"--kubeconfig={self.kubeconfig}", *args]
        result = subprocess.run(
            command, input=input, capture_output=True, text=True, check=False, timeout=120
        )
        if check and result.returncode != 0:
            raise KubectlError(result.returncode, command, result.stdout, result.stderr)
        return result

    def _write_credentials(self, pki: Pki) -> None:
        """Admin token file for the API server and a kubeconfig for kubectl, helm and Python."""
        tokens = self.workdir / "tokens.csv"
        tokens.touch(mode=0o600)
        tokens.write_text(f'{self.token},admin,admin,"system:masters"\n')
        ca_data = base64.b64encode(pki.ca_cert.read_bytes()).decode()
        self.kubeconfig.touch(mode=0o600)
        self.kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            "clusters:\n- name: budgetops\n  cluster:\n"
            f"    server: {self.server}\n    certificate-authority-data: {ca_data}\n"
            f"users:\n- name: admin\n  user:\n    token: {self.token}\n"
            "contexts:\n- name: budgetops\n  context:\n    cluster: budgetops\n    user: admin\n"
            "current-context: budgetops\n"
        )

    def _etcd_args(self, *, client: int, peer: int) -> list[str]:
        client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
        return [
            "--name=budgetops",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client_url}",
            f"--advertise-client-urls={client_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=budgetops={peer_url}",
            "--unsafe-no-fsync",
            # A lone member on loopback: elect itself in ~0.1 s instead of up to 1 s.
            "--heartbeat-interval=10",
            "--election-timeout=100",
            "--log-level=warn",
        ]

    def _apiserver_args(self, pki: Pki, *, etcd: int, port: int) -> list[str]:
        return [
            f"--etcd-servers=http://127.0.0.1:{etcd}",
            f"--bind-address={self.address}",
            f"--advertise-address={self.address}",
            f"--secure-port={port}",
            f"--cert-dir={self.workdir / 'apiserver-certs'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki.service_account_pub}",
            f"--service-account-signing-key-file={pki.service_account_key}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            "--service-cluster-ip-range=10.96.0.0/16",
            "--enable-admission-plugins=MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
            "--allow-privileged=true",
            # The reconciler would write 127.0.0.1 into Endpoints, which validation rejects.
            "--endpoint-reconciler-type=none",
        ]

    def _controller_manager_args(self, pki: Pki) -> list[str]:
        return [
            f"--kubeconfig={self.kubeconfig}",
            f"--controllers={','.join(self.CONTROLLERS)}",
            f"--service-account-private-key-file={pki.service_account_key}",
            f"--root-ca-file={pki.ca_cert}",
            f"--cluster-signing-cert-file={pki.ca_cert}",
            f"--cluster-signing-key-file={pki.ca_key}",
            "--use-service-account-credentials=false",
            "--leader-elect=false",
            "--secure-port=0",
        ]

    def _spawn(self, name: str, args: list[str], *, command: Sequence[str] = ()) -> None:
        """Start ``command`` (by default the binary called ``name``) with ``args``, logged."""
        command = command or [str(getattr(self.binaries, name.replace("-", "_")))]
        with (self.workdir / f"{name}.log").open("wb") as log_file:
            self._processes[name] = subprocess.Popen(
                [*_die_with_parent(), *command, *args],
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches us only; we stop them in order
            )

    def _wait(self, what: str, url: str, deadline: float) -> None:
        """Poll url until it answers 200; fail fast if a process exits, or at the deadline."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        while not _get_ok(url, context=context, token=self.token):
            exited = {n: p.returncode for n, p in self._processes.items() if p.poll() is not None}
            if exited:
                raise ControlPlaneError(f"waiting for {what}: exited {exited}\n{self._logs()}")
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{what} not ready after {self.timeout:.0f} s\n{self._logs()}"
                )
            time.sleep(0.1)

    def _logs(self) -> str:
        return "\n".join(
            f"--- {name}.log (last lines) ---\n{_tail(self.workdir / f'{name}.log')}"
            for name in self._processes
        )


@atexit.register
def _stop_all() -> None:
    """Crashed or forgetful test sessions must not leave etcd or kube-apiserver running."""
    for plane in list(_LIVE):
        plane.stop()


# --- command line ---------------------------------------------------------------------------


def _cmd_build(_: argparse.Namespace) -> int:
    try:
        binaries = ensure_binaries()
        node = node_binaries(build=True)  # hack/node.py installs the rest a node needs
    except BuildError as error:
        print(f"build failed: {error}", file=sys.stderr)
        return 1
    assert node is not None
    paths = binaries.as_dict() | {name.replace("-", "_"): str(path) for name, path in node.items()}
    print(json.dumps(paths, indent=2))
    return 0


def _cmd_paths(_: argparse.Namespace) -> int:
    binaries = cached_binaries()
    if binaries is None:
        print("binaries missing: run `python hack/control_plane.py build`", file=sys.stderr)
        return 3
    print(json.dumps(binaries.as_dict(), indent=2))
    return 0


class _StopRequested(Exception):
    """Raised from a signal handler so ``up`` leaves through ControlPlane.__exit__."""


def _request_stop(_signum: int, _frame: object) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):  # a second Ctrl-C must not cut stop() short
        signal.signal(signum, signal.SIG_IGN)
    raise _StopRequested


def _cmd_up(args: argparse.Namespace) -> int:
    try:
        binaries = ensure_binaries()
    except BuildError as error:
        print(f"build failed: {error}", file=sys.stderr)
        return 1
    serve(ControlPlane(binaries, workdir=args.workdir, keep=args.keep))
    return 0


def serve(plane: ControlPlane, started: Callable[[], None] = lambda: None) -> None:
    """Start ``plane``, call ``started``, print how to use it, run until Ctrl-C or SIGTERM."""
    # Explicit, because a shell starting us in the background leaves SIGINT ignored.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _request_stop)
    with contextlib.suppress(_StopRequested), plane:
        started()
        print(f"kubeconfig: {plane.kubeconfig}")
        print(f"kubectl:    {plane.binaries.kubectl}")
        print(f"export KUBECONFIG={plane.kubeconfig}", flush=True)
        while True:
            signal.pause()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("build", help="build missing binaries into the cache")
    up = commands.add_parser("up", help="run a control plane until Ctrl-C or SIGTERM")
    up.add_argument("--workdir", type=Path, help="empty or new directory (default: a temp dir)")
    up.add_argument("--keep", action="store_true", help="keep the workdir (logs) after stopping")
    commands.add_parser("paths", help="print cached binary paths as JSON; exit 3 if missing")
    args = parser.parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "build": _cmd_build,
        "up": _cmd_up,
        "paths": _cmd_paths,
    }
    return handlers[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
